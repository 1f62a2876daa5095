"""The original's training update: total-norm rescale, elementwise clip, Adam.

The original's ``S2S_DGM.py:1368-1374``; ``docs/reference_format.md`` §7.6 states the
arithmetic step by step.
"""

from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt


def adam(grads, params, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-4):
    """Adam as Lasagne's git master computes it, which is what the original code ran on.

    For step ``t = t_prev + 1``::

        a_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
        m_t = beta1 * m_prev + (1 - beta1) * g_t
        v_t = beta2 * v_prev + (1 - beta2) * g_t^2
        theta_t = theta_prev - a_t * m_t / (sqrt(v_t) + epsilon)

    epsilon is added to the *uncorrected* sqrt(v_t) (unlike PyTorch's Adam).
    Master forms ``1 - beta1`` and ``1 - beta2`` in float32, from
    ``T.constant(1)`` and the float32 betas: 0.100000024 and 0.0009999871.
    The PyPI release Lasagne 0.1 forms them in Python floats and casts the
    result (0.1 and 0.001), which moves v by 1.3e-5 relative at every step;
    so untapped keeps Lasagne 0.1 for its layers and does its Adam here.

    Returns the updates in Lasagne's order: for each parameter its m, its v
    and the parameter itself, then the step count ``t``.
    """
    beta1_f32, beta2_f32 = np.float32(beta1), np.float32(beta2)
    one_minus_beta1 = pt.constant(np.float32(1) - beta1_f32)
    one_minus_beta2 = pt.constant(np.float32(1) - beta2_f32)
    one = pt.constant(np.float32(1))
    t_prev = pytensor.shared(np.float32(0.0))
    t = t_prev + one
    a_t = learning_rate * pt.sqrt(one - beta2_f32**t) / (one - beta1_f32**t)
    updates = OrderedDict()
    for param, g_t in zip(params, grads):
        value = param.get_value(borrow=True)
        m_prev = pytensor.shared(np.zeros(value.shape, dtype=value.dtype))
        v_prev = pytensor.shared(np.zeros(value.shape, dtype=value.dtype))
        m_t = beta1_f32 * m_prev + one_minus_beta1 * g_t
        v_t = beta2_f32 * v_prev + one_minus_beta2 * g_t**2
        updates[m_prev] = m_t
        updates[v_prev] = v_t
        updates[param] = param - a_t * m_t / (pt.sqrt(v_t) + np.float32(epsilon))
    updates[t_prev] = t
    return updates
