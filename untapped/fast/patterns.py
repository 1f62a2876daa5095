"""The one graph pattern the fast kernels look for: a float32 matrix that is a sigmoid's output."""

import pytensor.scalar as ps
from pytensor.tensor.elemwise import Elemwise


def sigmoid_input(var):
    """``a`` when ``var`` is ``sigmoid(a)`` (an elementwise sigmoid is its last op), else ``None``.

    The decoder's Bernoulli mean is the sigmoid of its output layer's
    pre-activation; the fused Bernoulli kernels take that pre-activation.
    """
    owner = getattr(var, "owner", None)
    if owner is None or not isinstance(owner.op, Elemwise) or owner.op.scalar_op != ps.sigmoid:
        return None
    return owner.inputs[0]
