"""What the command-line tests share: run_mnist.py's click command, file digests, saved parameters."""

import hashlib
import importlib.util
import pathlib

import h5py

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_mnist.py"


def load_cli(module_name="run_mnist"):
    """``run_mnist.main``, the click command, loaded from the script (it is not a package module)."""
    spec = importlib.util.spec_from_file_location(module_name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def params(checkpoint):
    """Every parameter array saved in ``checkpoint``, by name."""
    with h5py.File(checkpoint, "r") as f:
        out = {}
        f["params"].visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out
