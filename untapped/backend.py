"""Compile modes: how a graph of :mod:`untapped.paper` becomes a compiled function.

=========  =============  ======================================================
mode       linker         graph
=========  =============  ======================================================
``c``      PyTensor's C   the fast kernels (:data:`untapped.fast.kernels.FAST`)
                          and rewrites (:mod:`untapped.fast.rewrites`): the default
``plain``  PyTensor's C   the paper layer's stock PyTensor ops only
``numba``  Numba          the same plain graph
=========  =============  ======================================================

The C mode is the one the original Theano code ran on (its backend), with
our speed work; ``plain`` is the reference reading of the graph, and
``numba`` PyTensor 3's default backend, for comparison. :func:`kernels`
gives the kernels a graph is built with, :func:`compile_mode` the mode it
is compiled in. Nothing here changes PyTensor's global configuration: we
compile inside :func:`compiling`, a scoped ``config.change_flags``.
"""

import importlib.metadata
import sys
import warnings

import numpy as np

from untapped.startup import import_pytensor

pytensor = import_pytensor()  # first: a bad PYTENSOR_FLAGS or OMP_NUM_THREADS is a one-line StartupError

from pytensor.compile.mode import Mode, get_mode  # noqa: E402

from parmesan_compat.backend import FLOATX, float32  # noqa: E402
from untapped.presets import DEFAULT_MODE, MODES  # noqa: E402

__all__ = ["DEFAULT_MODE", "FLOATX", "LINKERS", "MODES", "as_float32", "compile_mode", "compiling", "environment", "float32", "kernels"]

#: Each mode's PyTensor linker.
LINKERS = {"c": "cvm", "plain": "cvm", "numba": "numba"}


def _check(name):
    if name not in MODES:
        raise ValueError(f"unknown compile mode {name!r}; choose one of {', '.join(MODES)}")


def kernels(mode=DEFAULT_MODE):
    """The kernels a graph for ``mode`` is built with (:mod:`untapped.paper.kernels`)."""
    _check(mode)
    if mode == "c":
        from untapped.fast.kernels import FAST

        return FAST
    from untapped.paper.kernels import PLAIN

    return PLAIN


#: C compiler flags for the modules of our graphs, before the user's own
#: ``gcc__cxxflags`` (so theirs win). PyTensor passes ``-g -O3`` to every
#: module. Without debug information and at -O1 a cold compile of the
#: untapped training step is much shorter; the hot loops are ours, and their
#: ``omp simd`` loops are vectorised at any level, so an epoch hardly slows
#: (``docs/speed.md``, *What makes it fast*, has the measured figures). A training run gave
#: bit-identical values at -O1 and -O2.
C_COMPILE_FLAGS = "-g0 -O1"


def _cxxflags():
    """:data:`C_COMPILE_FLAGS`, then the user's ``gcc__cxxflags``."""
    return " ".join(f for f in (C_COMPILE_FLAGS, pytensor.config.gcc__cxxflags) if f)


def compiling(mode=DEFAULT_MODE):
    """Context manager under which we compile: float32 graphs (:func:`float32`), :data:`C_COMPILE_FLAGS`,
    and in the C mode the precompiled header of :mod:`untapped.fast.precompiled_header`."""
    _check(mode)
    cxxflags = _cxxflags()
    header = ""
    if mode == "c":
        from untapped.fast import precompiled_header

        with pytensor.config.change_flags(gcc__cxxflags=cxxflags):
            header = precompiled_header.compiler_flags()
    return pytensor.config.change_flags(floatX=FLOATX, gcc__cxxflags=" ".join(f for f in (cxxflags, header) if f))


def compile_mode(name=DEFAULT_MODE, keep_buffers=False):
    """The :class:`pytensor.compile.mode.Mode` for a mode name in :data:`MODES`.

    PyTensor's ``fast_run`` rewrites, and in the C mode ours
    (:func:`untapped.fast.rewrites.register`, added to this mode only).

    ``keep_buffers`` (C linker): the function keeps every intermediate array
    between calls instead of freeing it, so each C op writes into the
    buffer of its previous call. For the training step, called thousands of
    times at one batch size, that saves the kernel zeroing fresh pages
    (``docs/speed.md``, *What makes it fast*), at the cost of holding all of one step's
    intermediates at once.
    """
    _check(name)
    if name == "numba":
        return get_mode("NUMBA")  # PyTensor's own Numba mode: fast_run with the rewrites Numba supports
    linker = LINKERS[name]
    if linker == "cvm":
        blas_ldflags()  # resolve PyTensor's BLAS detection quietly, before any C compile
        if keep_buffers:
            linker = "cvm_nogc"
    mode = Mode(linker=linker, optimizer="fast_run")
    if name == "c":
        from untapped.fast import rewrites

        mode = rewrites.register(mode)
    return mode


def blas_ldflags():
    """The BLAS link flags PyTensor's C code uses ('' : it calls NumPy's BLAS instead).

    PyTensor detects them once per process and, when it finds no BLAS to
    link, warns in five lines that it is "severely degraded". Here that is
    expected for a pip install (NumPy's OpenBLAS does the work; see
    ``docs/speed.md``, *Linking a BLAS*), and the flags are recorded with every run, so
    the detection runs without the warning.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        return pytensor.config.blas__ldflags


def environment(mode=DEFAULT_MODE):
    """What a run should record about the numerical environment it ran in."""
    versions = {
        name: _version(name)
        for name in ("pytensor", "Lasagne", "numpy", "scipy", "scikit-learn", "h5py", "click")
    }
    return {
        "python": sys.version.split()[0],
        "versions": versions,
        "mode": mode,
        "linker": LINKERS[mode],
        "blas__ldflags": blas_ldflags(),
        "cxxflags": _cxxflags(),
        "vector_math": _vector_math(mode),
        "floatX": FLOATX,
    }


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _vector_math(mode):
    if mode != "c":
        return None
    from untapped.fast.codegen import vector_math_libraries

    return vector_math_libraries() or None


def as_float32(array):
    """``array`` as a C-contiguous float32 NumPy array."""
    return np.ascontiguousarray(array, dtype=FLOATX)
