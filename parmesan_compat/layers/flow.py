"""The logistic flow to a box (paper App. A, eqs. 10-16).

A diagonal-Gaussian draw ``z~`` is squashed into the box ``(a, b)^d`` by the
scaled sigmoid ``z = a + (b - a) sigma(z~)`` (eq. 10). Its density follows from
the change of variables ``log q(z) = log q0(z~) - log|det dz/dz~|``, with the
diagonal Jacobian ``dz_i/dz~_i = (b - a) s_i (1 - s_i)``, ``s_i = sigma(z~_i)``.

The paper's eqs. 14-16 write the factor as ``sigma(1 - z^_i) sigma(z^_i)`` with
``z^_i = (z_i - a)/(b - a)``: a typo that applies the sigmoid twice. Since
``z^_i = s_i`` the correct factor is ``z^_i (1 - z^_i) = s_i (1 - s_i)``, which is
what the original code computes, and what we compute.

Defaults are the original's: the box is ``(-pi/2, pi/2)`` (the paper says
``[-1.5, 1.5]``), and the log-det is taken as ``log(1e-5 + prod_i (b-a) s_i (1-s_i))``,
so it never drops below ``log(1e-5)``. ``exact=True`` gives the exact sum
``d log(b - a) + sum_i [log s_i + log(1 - s_i)]`` (eq. 16, corrected).
"""

import numpy as np
import pytensor.tensor as pt

from parmesan_compat.backend import load_lasagne

lasagne = load_lasagne()

DEFAULT_LOW = -np.pi / 2
DEFAULT_HIGH = np.pi / 2
LOG_DET_EPS = 1e-5
INVERSE_CLIP = 1e-5


def logistic_flow(z_tilde, low=DEFAULT_LOW, high=DEFAULT_HIGH):
    """Eq. 10: ``z = a + (b - a) sigma(z~)``, elementwise."""
    return low + (high - low) * pt.sigmoid(z_tilde)


def logistic_flow_inverse(z, low=DEFAULT_LOW, high=DEFAULT_HIGH, clip=INVERSE_CLIP):
    """Eqs. 12-13: ``z~ = log(u / (1 - u))`` with ``u = (z - a)/(b - a)`` clipped to [clip, 1 - clip]."""
    u = pt.clip((z - low) / (high - low), clip, 1.0 - clip)
    return pt.log(u / (1.0 - u))


def logistic_flow_log_det(z_tilde, low=DEFAULT_LOW, high=DEFAULT_HIGH, exact=False, eps=LOG_DET_EPS):
    """Log-determinant of the flow's Jacobian per row (eqs. 14-16, corrected).

    Default, as coded in the original: ``log(eps + prod_i (b - a) s_i (1 - s_i))``.
    With ``exact=True``: ``d log(b - a) - sum_i [softplus(-z~_i) + softplus(z~_i)]``,
    which is ``d log(b-a) + sum_i [log s_i + log(1 - s_i)]`` computed without
    underflow. ``z_tilde`` has shape (batch, d); the result has shape (batch,).
    """
    if exact:
        d = pt.cast(z_tilde.shape[-1], z_tilde.dtype)
        return d * float(np.log(high - low)) - pt.sum(pt.softplus(-z_tilde) + pt.softplus(z_tilde), axis=-1)
    s = pt.sigmoid(z_tilde)
    return pt.log(eps + pt.prod((high - low) * s * (1.0 - s), axis=-1))


class LogisticFlowLayer(lasagne.layers.Layer):
    """Lasagne layer for eq. 10; :meth:`log_det_jacobian` gives eq. 16 for the same input.

    The flow has no parameters. ``low``/``high`` default to the original's
    ``(-pi/2, pi/2)``; ``exact`` selects the exact log-det instead of the
    original's ``1e-5``-guarded product.
    """

    def __init__(self, incoming, low=DEFAULT_LOW, high=DEFAULT_HIGH, exact=False, **kwargs):
        super().__init__(incoming, **kwargs)
        if not high > low:
            raise ValueError(f"the flow's box needs low < high, got ({low}, {high})")
        self.low, self.high, self.exact = float(low), float(high), exact

    def get_output_for(self, input, **kwargs):
        return logistic_flow(input, self.low, self.high)

    def log_det_jacobian(self, z_tilde):
        return logistic_flow_log_det(z_tilde, self.low, self.high, exact=self.exact)

    def inverse(self, z):
        return logistic_flow_inverse(z, self.low, self.high)
