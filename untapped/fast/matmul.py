"""The matrix product in the orientation BLAS runs fastest."""

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from untapped.fast import compat


class Matmul(Op):
    """``x @ y`` for float32 matrices, computed as ``(y.T @ x.T).T`` when the result is wide.

    OpenBLAS (through NumPy) multiplies much faster into a tall result than a
    wide one when the inner dimension is long: the weight gradients
    ``h.T @ d`` (e.g. 500 x 10,000 x 784) run faster as ``(d.T @ h).T``.
    The products are the same sums (float32 reassociation at most). The
    gradient uses the same op, so the backward products pick their
    orientation too. A wide result is returned as a transposed
    (Fortran-ordered) view.
    """

    __props__ = ()

    def make_node(self, x, y):
        x, y = pt.as_tensor_variable(x), pt.as_tensor_variable(y)
        if x.ndim != 2 or y.ndim != 2:
            raise TypeError("Matmul multiplies matrices")
        dtype = pt.as_tensor_variable(np.zeros((), x.type.dtype) * np.zeros((), y.type.dtype)).type.dtype
        return Apply(self, [x, y], [pt.matrix(dtype=dtype, shape=(x.type.shape[0], y.type.shape[1]))])

    def perform(self, node, inputs, outputs):
        x, y = inputs
        if x.shape[0] < y.shape[1]:
            z = np.dot(y.T, x.T).T
        else:
            z = np.dot(x, y)
        outputs[0][0] = z.astype(node.outputs[0].type.dtype, copy=False)

    @compat.infer_shape
    def infer_shape(self, node, shapes):
        return [(shapes[0][0], shapes[1][1])]

    def pullback(self, inputs, outputs, output_grads):
        x, y = inputs
        (g,) = output_grads
        return [matmul(g, y.T), matmul(x.T, g)]


matmul = Matmul()
