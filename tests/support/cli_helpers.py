"""What the command-line tests share: the commands run in-process, file digests, saved parameters."""

import hashlib
import pathlib

import h5py
from click.testing import CliRunner

from untapped import cli

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "run_mnist.py"


def invoke(args, cache=None, env=None, command=cli.run_mnist, **extra):
    """``command`` (``run_mnist.py``'s, by default) run in-process on ``args``, as a user would type it.

    Its options come from ``args`` alone: the ``UNTAPPED_<OPTION>``
    variables of the tests' environment (CI sets ``UNTAPPED_DATA_DIR``) are
    unset, and ``env`` sets variables for the run. ``cache``, a folder,
    holds the digit classifier (``XDG_CACHE_HOME``), so that a test module
    fits it once, in its own cache. ``extra`` goes to :meth:`click.testing.CliRunner.invoke`.
    """
    unset = {p.envvar or f"UNTAPPED_{p.name.upper()}": None for p in cli.run_mnist.params}
    cached = {"XDG_CACHE_HOME": str(cache)} if cache is not None else {}
    return CliRunner().invoke(command, [str(a) for a in args], env={**unset, **cached, **(env or {})}, **extra)


def sha(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def params(checkpoint):
    """Every parameter array saved in ``checkpoint``, by name."""
    with h5py.File(checkpoint, "r") as f:
        out = {}
        f["params"].visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        return out
