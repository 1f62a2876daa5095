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
is compiled in, :func:`resolve_mode` the mode a model runs in (the plain
mode instead of a C mode whose speed layer fails on an untested PyTensor).
Nothing here changes PyTensor's global configuration: we compile inside
:func:`compiling`, a scoped ``config.change_flags``.
"""

import functools
import importlib.metadata
import logging
import sys
import warnings

import numpy as np

from untapped.startup import import_pytensor

pytensor = import_pytensor()  # first: a bad PYTENSOR_FLAGS or OMP_NUM_THREADS is a one-line StartupError

from pytensor.compile.mode import Mode, get_mode  # noqa: E402

from parmesan_compat.backend import FLOATX, float32  # noqa: E402
from untapped.presets import DEFAULT_MODE, MODES  # noqa: E402

__all__ = [
    "DEFAULT_MODE", "FLOATX", "LINKERS", "MODES", "as_float32", "compile_mode", "compiling", "environment", "float32",
    "kernels", "resolve_mode",
]

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


def resolve_mode(name=DEFAULT_MODE):
    """The mode a model asked to run in ``name`` runs in: ``name``, or 'plain' for a C mode that fails.

    On a PyTensor inside the tested range (:mod:`untapped.fast.compat`) that is
    ``name``. On one outside it, the C mode is first tried on a small graph
    (:func:`speed_layer_failure`); one line on the ``untapped`` logger names
    the tested range and says whether the C mode is kept or the plain mode
    is used instead, so the speed layer never ends a run with a traceback.
    """
    _check(name)
    if name != "c":
        return name
    return "c" if speed_layer_failure() is None else "plain"


@functools.cache
def speed_layer_failure():
    """None when the C mode can be used, else the one line that says why not (checked once a process)."""
    from untapped.fast import compat

    message = compat.untested_message()
    if message is None:
        return None
    try:
        failure = _speed_layer_mismatch()
    except Exception as exc:  # whatever a new PyTensor breaks in the speed layer
        failure = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if failure is None:
        logging.getLogger("untapped").warning(f"{message}; its C mode passed a self-check and is used")
        return None
    line = f"{message}; its C mode fails ({failure}), so the plain mode is used"
    logging.getLogger("untapped").warning(line)
    return line


def _speed_layer_mismatch():
    """Compile a small graph through every fast kernel and rewrite in the C and plain modes; None if they agree."""
    import pytensor.tensor as pt
    from pytensor.tensor.special import log_softmax

    from untapped.fast.kernels import FAST
    from untapped.paper.kernels import PLAIN

    rng = np.random.default_rng(0)
    data = (rng.random((6, 5)) > 0.5).astype(FLOATX)
    weights = [rng.standard_normal(shape).astype(FLOATX) for shape in ((5, 4), (4,), (4, 5), (5,))]
    results = {}
    for mode, kernels in (("c", FAST), ("plain", PLAIN)):
        with float32():
            x = pytensor.shared(data, name="x")
            W, b, V, c = (pytensor.shared(w) for w in weights)
            rows = pt.vector("rows", dtype="int64")
            batch = x[rows]
            hidden = kernels.dense([batch], (5,), W, b, kernels.tanh)
            mean = kernels.dense([hidden], (4,), V, c, pt.sigmoid)
            next_rng, u = kernels.uniform(pytensor.shared(np.random.default_rng(1)), batch.shape)
            sample = pt.cast(u < mean, FLOATX)
            total = kernels.bernoulli_log_lik_rows(batch, mean).sum() + log_softmax(hidden, axis=-1)[:, 0].sum()
            outputs = [total, sample, *pytensor.grad(total, [W, b, V, c])]
            with compiling(mode):
                f = pytensor.function([rows], outputs, mode=compile_mode(mode))
        results[mode] = f(np.array([0, 2, 2, 5], dtype="int64"))
    for name, c_value, plain_value in zip(["value", "sample"] + ["gradient"] * 4, results["c"], results["plain"]):
        if not np.allclose(c_value, plain_value, rtol=1e-4, atol=1e-5):
            return f"a {name} differs from the plain mode's"
    return None


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
    ran = resolve_mode(mode)
    return {
        "python": sys.version.split()[0],
        "versions": versions,
        "mode": ran,
        "pytensor_tested": _pytensor_tested(),
        "linker": LINKERS[ran],
        "blas__ldflags": blas_ldflags(),
        "cxxflags": _cxxflags(),
        "vector_math": _vector_math(ran),
        "floatX": FLOATX,
    }


def _pytensor_tested():
    """Whether the imported PyTensor is inside untapped's tested range, and that range."""
    from untapped.fast import compat

    return {"in_range": compat.in_tested_range(), "range": compat.TESTED_RANGE}


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
