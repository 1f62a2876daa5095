# From a fresh clone: `make run` sets everything up and runs the default
# experiment; `make test` sets everything up and runs the tests (`make
# test-quick`: all but the slow ones, for the edit-test loop; `make lint`:
# ruff). All create (once) and reuse a virtual environment with the pinned
# requirements of LOCK:
# .venv for the lock of Python 3.11 (requirements.txt, the default), and one
# folder per lock and interpreter otherwise, e.g. for the newest versions
#   make test PYTHON=python3.12 LOCK=requirements-latest.txt   # in .venv-latest-python3.12

PYTHON ?= python3
LOCK ?= requirements.txt
# Optional extras to install with the package, e.g. EXTRAS=[dask] (pinned in requirements-dask.txt) or
# EXTRAS=[dask,bench] (the peers of bench/peers/, pinned in requirements-bench.txt; Python 3.11)
EXTRAS ?=

ifeq ($(PYTHON) $(LOCK),python3 requirements.txt)
VENV ?= .venv
else
VENV ?= .venv-$(patsubst requirements-%.txt,%,$(patsubst requirements.txt,lock,$(notdir $(LOCK))))-$(notdir $(lastword $(PYTHON)))
endif

comma := ,
DASK := $(findstring dask,$(EXTRAS))
BENCH := $(findstring bench,$(EXTRAS))
# What is installed in VENV, e.g. .installed-requirements-latest-dask for LOCK=requirements-latest.txt EXTRAS=[dask]
STAMP := $(VENV)/.installed-$(basename $(notdir $(LOCK)))$(subst [,-,$(subst ],,$(subst $(comma),-,$(EXTRAS))))

# The suite is mostly single-threaded compilation: run the test files on every
# core, each file's tests in one worker (so module fixtures are built once).
PYTEST := -m pytest -q -n auto --dist loadfile

.PHONY: run test test-quick lint install

install: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml setup.py $(if $(DASK),requirements-dask.txt) $(if $(BENCH),requirements-bench.txt)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r $(LOCK) $(strip $(if $(DASK),-r requirements-dask.txt) $(if $(BENCH),-r requirements-bench.txt)) -e ".$(EXTRAS)"
	touch $@

run: $(STAMP)
	$(VENV)/bin/python run_mnist.py --epochs 150 --batch 10000

test: $(STAMP)
	$(VENV)/bin/python $(PYTEST)

test-quick: $(STAMP)
	$(VENV)/bin/python $(PYTEST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
