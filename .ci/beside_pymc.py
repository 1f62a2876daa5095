"""CI: untapped trains in the C mode in a process that imported PyMC first.

    python .ci/beside_pymc.py OUT

runs one short epoch of run_mnist.py (M2, 200 rows) into OUT after
``import pymc`` and fails unless it exits 0 with its run in the C mode.
"""

import json
import pathlib
import runpy
import sys

import untapped

untapped.configure_threads()

import pymc  # noqa: E402
import pytensor  # noqa: E402

out = pathlib.Path(sys.argv[1])
print(f"untapped {untapped.__version__} beside pymc {pymc.__version__} on pytensor {pytensor.__version__}")
script = pathlib.Path(__file__).resolve().parents[1] / "run_mnist.py"
sys.argv = [str(script), "--epochs", "1", "--model", "m2", "--batch", "64", "--subset", "200", "--out", str(out)]
try:
    runpy.run_path(str(script), run_name="__main__")
except SystemExit as exit:
    if exit.code not in (0, None):
        raise
(config,) = out.glob("m2-*/config.json")
mode = json.loads(config.read_text())["mode"]
if mode != "c":
    sys.exit(f"error: run_mnist.py trained in the {mode} mode beside PyMC, not in the C mode")
