"""The tanh of the hidden layers, fast: a scalar op PyTensor fuses, and a dense layer's tanh and its gradient.

- :data:`tanh` is the Cephes library's ``tanhf`` (an odd minimax polynomial
  ``x + x^3 P(x^2)`` for ``|x| < 0.625``, else ``sign(x) (1 - 2 / (exp(2|x|) + 1))``),
  a scalar op PyTensor fuses like its own ``tanh``;
- :data:`bias_tanh` is a dense layer's ``tanh(a + b)`` with it, in one
  vectorised pass, and :data:`tanh_grad` is its backward ``g (1 - t^2)``
  (and the bias gradient, its column sums) on all threads.

Each equals ``pytensor.tensor.tanh`` to a few ulps (``tests/test_ops.py``).
"""

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.scalar.basic import UnaryScalarOp, float_types, upgrade_to_float
from pytensor.tensor.elemwise import Elemwise

from untapped.fast import compat
from untapped.fast.codegen import TANH_SUPPORT, RowOp


class FastTanh(UnaryScalarOp):
    """``tanh`` with vectorisable float32 C code (Cephes ``tanhf``); see the module docstring."""

    preserves_zero = True
    monotonic_increasing = True
    # Backends without our C code (Numba) compute NumPy's tanh instead.
    nfunc_spec = ("tanh", 1, 1)

    def impl(self, x):
        return np.tanh(x)

    def pullback(self, inputs, outputs, gout):
        (x,) = inputs
        (gz,) = gout
        if x.type not in float_types:
            return [x.zeros_like()]
        return (gz * (1 - ps.sqr(scalar_tanh(x))),)

    def c_support_code(self, **kwargs):
        return TANH_SUPPORT

    def c_code(self, node, name, inputs, outputs, sub):
        (x,) = inputs
        (z,) = outputs
        if node.outputs[0].type.dtype != "float32":
            cast = node.outputs[0].type.dtype_specs()[1]
            return f"{z} = tanh(({cast}){x});"
        return f"{z} = untapped_tanhf({x});"

    def c_code_cache_version(self):
        return (5,)


scalar_tanh = FastTanh(upgrade_to_float, name="fast_tanh")
#: Elementwise ``tanh`` for tensors (a drop-in for ``pytensor.tensor.tanh``).
tanh = Elemwise(scalar_tanh, name="fast_tanh")


class BiasTanh(RowOp):
    """``tanh(a + b)`` for a (rows, units) pre-activation ``a`` and a bias vector ``b``: a tanh dense layer's output.

    The same function as ``tanh(a + b)`` (the Cephes ``tanhf`` of
    :class:`FastTanh`), computed in one vectorised pass. Its gradient is
    ``g (1 - t^2)`` for ``a`` and the column sums of that for ``b``.
    """

    def make_node(self, a, b):
        a, b = pt.as_tensor_variable(a), pt.as_tensor_variable(b)
        self._check(a, b)
        if a.ndim != 2 or b.ndim != 1:
            raise TypeError("BiasTanh takes a matrix and a bias vector")
        return Apply(self, [a, b], [pt.matrix(dtype="float32", shape=a.type.shape)])

    def perform(self, node, inputs, outputs):
        a, b = inputs
        outputs[0][0] = np.tanh(a + b).astype(np.float32)

    def pullback(self, inputs, outputs, output_grads):
        (t,), (g,) = outputs, output_grads
        g_a, g_b = tanh_grad(g, t)
        return [g_a, g_b]

    @compat.infer_shape
    def infer_shape(self, node, shapes):
        return [shapes[0]]

    def c_code(self, node, name, inputs, outputs, sub):
        a, b = inputs
        (z,) = outputs
        return self._elementwise(sub, z, ((a, "a"),), lambda e: f"untapped_tanhf({e('a')} + {e('b')})", bias=b)


bias_tanh = BiasTanh()


class TanhGrad(RowOp):
    """``g (1 - t^2)`` and its column sums: the gradients of a tanh layer ``t = tanh(a + b)``
    with respect to ``a`` and ``b``, for an upstream gradient ``g``, in one pass on all threads.

    The backward pass of every tanh layer (:class:`BiasTanh`); PyTensor's
    elementwise loop for it runs on one thread. The same float32 arithmetic,
    in the same order, as ``g * (1 - sqr(t))``; the column sums are
    :class:`MatrixSum`'s, bit for bit, without a pass of their own.
    """

    def make_node(self, g, t):
        g, t = pt.as_tensor_variable(g), pt.as_tensor_variable(t)
        self._check(g, t)
        if g.ndim != 2 or t.ndim != 2:
            raise TypeError("TanhGrad takes matrices")
        shape = tuple(s1 if s1 is not None else s2 for s1, s2 in zip(g.type.shape, t.type.shape))
        return Apply(
            self, [g, t], [pt.matrix(dtype="float32", shape=shape), pt.vector(dtype="float32", shape=shape[1:])]
        )

    def perform(self, node, inputs, outputs):
        g, t = inputs
        g_a = (g * (np.float32(1) - t * t)).astype(np.float32)
        outputs[0][0] = g_a
        outputs[1][0] = g_a.sum(axis=0, dtype=np.float64).astype(np.float32)

    @compat.infer_shape
    def infer_shape(self, node, shapes):
        return [shapes[1], shapes[1][1:]]

    def c_code(self, node, name, inputs, outputs, sub):
        g, t = inputs
        z, sums = outputs
        gradient = lambda e: f"{e('g')} * (1.0f - {e('t')} * {e('t')})"  # noqa: E731
        return self._elementwise(sub, z, ((g, "g"), (t, "t")), gradient, column_sums=sums)


tanh_grad = TanhGrad()
