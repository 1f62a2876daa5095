# From a fresh clone: `make run` sets everything up and runs the default
# experiment; `make test` sets everything up and runs the tests. Both create
# (once) and reuse the virtual environment .venv with the pinned requirements.

PYTHON ?= python3
VENV ?= .venv
# Optional extras to install with the package, e.g. EXTRAS=[dask]
EXTRAS ?=

STAMP := $(VENV)/.installed$(subst [,-,$(subst ],,$(EXTRAS)))

.PHONY: run test install

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements.txt -e ".$(EXTRAS)"
	touch $@

run: $(STAMP)
	$(VENV)/bin/python run_mnist.py --epochs 150 --batch 10000

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
