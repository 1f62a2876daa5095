"""Lasagne 0.1 on PyTensor, loaded on first use, and the float32 graphs it builds.

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
the graph as an explicit noise tensor instead (see :mod:`parmesan_compat.layers`).

Importing this module changes nothing: :func:`load_lasagne` imports Lasagne
the first time it is called. Nothing here changes PyTensor's global
configuration; graphs are built under :func:`float32`, a scoped
``config.change_flags``.
"""

import contextlib
import importlib.metadata
import sys
import types

import pytensor
import pytensor.tensor as pt

FLOATX = "float32"


def float32():
    """Context manager under which PyTensor builds float32 graphs.

    Python scalars in a graph (``0.5 * x``) take PyTensor's ``floatX``; with
    the global default of float64 they would silently upcast float32 tensors.
    """
    return pytensor.config.change_flags(floatX=FLOATX)


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
    rng_mrg = _AliasModule(
        "theano.sandbox.rng_mrg", MRG_RandomStreams=_not_mapped("theano.sandbox.rng_mrg.MRG_RandomStreams")
    )
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
