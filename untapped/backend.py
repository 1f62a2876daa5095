"""PyTensor set-up: float32 graphs, compile modes, and the PyPI Lasagne on PyTensor.

Lasagne 0.1 (the release the original code used) imports ``theano``. PyTensor
is Theano's maintained successor and keeps almost all of the tensor API, so
Lasagne runs on it once ``import theano`` resolves to PyTensor. We do that
with a small set of alias modules that live in ``sys.modules`` only while
Lasagne itself is being imported; afterwards they are removed again, so no
other code in the process can mistake PyTensor for a real Theano. Lasagne's
modules keep their own references to the aliases, which is all they need.

Only what Lasagne's dense-network path touches is mapped. Convolution,
pooling and Lasagne's own noise layers raise :class:`NotImplementedError`
when used: untapped needs none of them, and it feeds every random draw into
the graph as an explicit noise tensor instead (see ``parmesan_compat``).

Nothing here changes PyTensor's global configuration. Lasagne sees
``floatX = 'float32'`` through its alias config, and our own graphs are built
and compiled inside :func:`float32`, a scoped ``config.change_flags``.
"""

import contextlib
import importlib.metadata
import sys
import types
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode

from untapped import precompiled_header, rewrites
from untapped.ops import vector_math_libraries

FLOATX = "float32"

#: Compile modes by the names the command line uses. ``c`` is PyTensor's C
#: backend (the one the original Theano code ran on); ``numba`` is PyTensor
#: 3's default backend, selectable for comparison.
MODES = {
    "c": dict(linker="cvm", optimizer="fast_run"),
    "numba": dict(linker="numba", optimizer="fast_run"),
}
DEFAULT_MODE = "c"


def float32():
    """Context manager under which PyTensor builds float32 graphs.

    Python scalars in a graph (``0.5 * x``) take PyTensor's ``floatX``; with
    the global default of float64 they would silently upcast float32 tensors.
    """
    return pytensor.config.change_flags(floatX=FLOATX)


#: C compiler flags for the modules of our graphs, before the user's own
#: ``gcc__cxxflags`` (so theirs win). PyTensor passes ``-g -O3`` to every
#: module. Without debug information and at -O1 a cold compile of the
#: untapped training step is about 40% shorter than at ``-g -O3`` (a quarter
#: shorter than at -O2). The hot loops are ours, and their ``omp simd`` loops
#: are vectorised at any level; PyTensor's elementwise loops run ~15% slower
#: than at -O2, about 1% of an epoch (README, *Speed*). A training run gave
#: bit-identical values at -O1 and -O2.
C_COMPILE_FLAGS = "-g0 -O1"


def _cxxflags():
    """:data:`C_COMPILE_FLAGS`, then the user's ``gcc__cxxflags``."""
    return " ".join(f for f in (C_COMPILE_FLAGS, pytensor.config.gcc__cxxflags) if f)


def compiling():
    """Context manager under which we compile: float32 graphs (:func:`float32`), :data:`C_COMPILE_FLAGS`
    and the precompiled header of :mod:`untapped.precompiled_header`."""
    cxxflags = _cxxflags()
    with pytensor.config.change_flags(gcc__cxxflags=cxxflags):
        header = precompiled_header.compiler_flags()
    return pytensor.config.change_flags(floatX=FLOATX, gcc__cxxflags=" ".join(f for f in (cxxflags, header) if f))


def compile_mode(name=DEFAULT_MODE, keep_buffers=False):
    """The :class:`pytensor.compile.mode.Mode` for a mode name in :data:`MODES`.

    ``keep_buffers`` (C mode): the function keeps every intermediate array
    between calls instead of freeing it, so each C op writes into the
    buffer of its previous call. For the training step, called thousands of
    times at one batch size, that saves the kernel zeroing fresh pages
    (~35,000 page faults and 0.35 s of an untapped epoch), at the cost of
    holding all of one step's intermediates at once.
    """
    if name not in MODES:
        raise ValueError(f"unknown compile mode {name!r}; choose one of {', '.join(MODES)}")
    options = dict(MODES[name])
    if name == "c":
        blas_ldflags()  # resolve PyTensor's BLAS detection quietly, before any C compile
        if keep_buffers:
            options["linker"] = "cvm_nogc"
    tags = (rewrites.TAG, rewrites.C_TAG) if name == "c" else (rewrites.TAG,)
    return Mode(**options).including(*tags)


def blas_ldflags():
    """The BLAS link flags PyTensor's C code uses ('' : it calls NumPy's BLAS instead).

    PyTensor detects them once per process and, when it finds no BLAS to
    link, warns in five lines that it is "severely degraded". Here that is
    expected for a pip install (NumPy's OpenBLAS does the work; see the
    README's Speed section), and the flags are recorded with every run, so
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
        "linker": MODES[mode]["linker"],
        "blas__ldflags": blas_ldflags(),
        "cxxflags": _cxxflags(),
        "vector_math": vector_math_libraries() or None,
        "floatX": FLOATX,
    }


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------
# The alias modules that let Lasagne 0.1 import on PyTensor.


def _not_mapped(what):
    def unavailable(*args, **kwargs):
        raise NotImplementedError(
            f"{what} is not available: untapped runs Lasagne on PyTensor and maps "
            "only the dense-network path (no convolution, pooling or Lasagne noise layers)"
        )

    unavailable.__name__ = what.rsplit(".", 1)[-1]
    return unavailable


class _AliasModule(types.ModuleType):
    """A module that falls back to another module for attributes it lacks."""

    def __init__(self, name, fallback=None, **attrs):
        super().__init__(name)
        self.__dict__.update(attrs)
        self._fallback = fallback

    def __getattr__(self, attr):
        if self._fallback is None or attr.startswith("__"):
            raise AttributeError(f"alias module {self.__name__!r} has no attribute {attr!r}")
        return getattr(self._fallback, attr)


def _theano_shared(value, name=None, strict=False, allow_downcast=None, broadcastable=None, **kwargs):
    """``theano.shared``: Lasagne's ``broadcastable=`` is PyTensor's static ``shape`` (1 where broadcastable)."""
    if broadcastable is not None:
        kwargs["shape"] = tuple(1 if b else None for b in broadcastable)
    return pytensor.shared(value, name=name, strict=strict, allow_downcast=allow_downcast, **kwargs)


def _theano_aliases():
    """Build the ``theano.*`` alias modules, keyed by module name."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Variable
    from pytensor.tensor.special import softmax

    conv = _AliasModule("theano.tensor.nnet.conv", conv2d=_not_mapped("theano.tensor.nnet.conv.conv2d"))
    nnet = _AliasModule(
        "theano.tensor.nnet",
        sigmoid=pt.sigmoid,
        softplus=pt.softplus,
        softmax=lambda x: softmax(x, axis=-1),
        binary_crossentropy=lambda p, t: -(t * pt.log(p) + (1 - t) * pt.log1p(-p)),
        categorical_crossentropy=_not_mapped("theano.tensor.nnet.categorical_crossentropy"),
        conv2d=_not_mapped("theano.tensor.nnet.conv2d"),
        conv=conv,
    )
    downsample = _AliasModule(
        "theano.tensor.signal.downsample", max_pool_2d=_not_mapped("theano.tensor.signal.downsample.max_pool_2d")
    )
    signal = _AliasModule("theano.tensor.signal", downsample=downsample)
    tensor = _AliasModule("theano.tensor", fallback=pt, nnet=nnet, signal=signal, grad=pytensor.grad)
    rng_mrg = _AliasModule("theano.sandbox.rng_mrg", MRG_RandomStreams=_not_mapped("theano.sandbox.rng_mrg.MRG_RandomStreams"))
    sandbox = _AliasModule("theano.sandbox", rng_mrg=rng_mrg)
    config = types.SimpleNamespace(floatX=FLOATX, device="cpu")
    theano = _AliasModule(
        "theano",
        tensor=tensor,
        sandbox=sandbox,
        config=config,
        shared=_theano_shared,
        function=pytensor.function,
        grad=pytensor.grad,
        scan=pytensor.scan,
        TensorType=pt.TensorType,
        compile=_AliasModule("theano.compile", SharedVariable=SharedVariable),
        gof=_AliasModule("theano.gof", Variable=Variable),
        gradient=_AliasModule("theano.gradient", fallback=pytensor.gradient),
    )
    modules = {"theano": theano}
    stack = [theano]
    while stack:
        module = stack.pop()
        for value in vars(module).values():
            if isinstance(value, _AliasModule) and value.__name__ not in modules:
                modules[value.__name__] = value
                stack.append(value)
    return modules


def _pkg_resources_shim():
    """Lasagne reads its version through ``pkg_resources``, which new setuptools drop."""
    return _AliasModule(
        "pkg_resources",
        get_distribution=lambda name: types.SimpleNamespace(version=importlib.metadata.version(name)),
    )


@contextlib.contextmanager
def _scoped_modules(modules):
    saved = {name: sys.modules[name] for name in modules if name in sys.modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def load_lasagne():
    """Import the PyPI Lasagne on top of PyTensor and return the module.

    Idempotent: the second call returns the module already imported.
    """
    if "lasagne" in sys.modules:
        return sys.modules["lasagne"]
    aliases = _theano_aliases()
    if "pkg_resources" not in sys.modules:
        aliases["pkg_resources"] = _pkg_resources_shim()
    with _scoped_modules(aliases):
        import lasagne
    return lasagne


@contextlib.contextmanager
def lasagne_rng(rng):
    """Let Lasagne's initialisers draw from ``rng`` inside the block, and only there."""
    random = load_lasagne().random
    previous = random.get_rng()
    random.set_rng(rng)
    try:
        yield rng
    finally:
        random.set_rng(previous)


def as_float32(array):
    """``array`` as a C-contiguous float32 NumPy array."""
    return np.ascontiguousarray(array, dtype=FLOATX)


lasagne = load_lasagne()
