"""Log densities, as the original Parmesan code computes them.

All functions are elementwise over their inputs unless stated otherwise and
return symbolic PyTensor expressions; the caller sums over the event axis.
The epsilons and clips are the original's
(``parmesan/distributions.py:29-58, 174-195, 364-373``): they
change the values slightly and bound them, and a faithful port keeps them.
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor.special import softmax

# Python floats, not NumPy scalars: a NumPy float64 constant would upcast float32 graphs.
HALF_LOG_2PI = float(0.5 * np.log(2.0 * np.pi))


def log_normal(x, mean, std, eps=1e-5):
    """Gaussian log density parameterised by its standard deviation.

    ``log N(x; mean, s) = -log(2 pi)/2 - log|s| - (x - mean)^2 / (2 s^2)`` with
    ``s = std + eps``: the original adds ``eps`` to the standard deviation
    (Kingma & Welling 2013, App. C.2, with Parmesan's guard against s = 0).
    """
    s = std + eps
    return -HALF_LOG_2PI - pt.log(pt.abs(s)) - (x - mean) ** 2 / (2.0 * s**2)


def log_bernoulli(x, p, eps=1e-5):
    """Bernoulli log mass ``x log p + (1 - x) log(1 - p)``, ``p`` clipped to [eps, 1 - eps].

    The clip bounds every pixel's term below by ``log(1e-5)``; its gradient is
    zero outside the range, as Theano's clip was.
    """
    p = pt.clip(p, eps, 1.0 - eps)
    return x * pt.log(p) + (1.0 - x) * pt.log(1.0 - p)


def log_concrete(y, logits, temperature=1.0):
    """Log density of the Concrete (Gumbel-softmax) distribution, summed per row.

    Maddison, Mnih & Teh (2016), eq. 10, with ``alpha = p = softmax(logits)``
    over ``k`` classes and temperature ``tau``::

        log Conc(y; alpha, tau) = log (k-1)! + (k-1) log tau
                                  - k log sum_i (alpha_i / y_i^tau)
                                  + sum_i log(alpha_i / y_i^(tau+1))

    The density is invariant to rescaling ``alpha``. As in the original there
    is no clip: a ``y`` or ``p`` entry that underflows to 0 gives inf or NaN.
    ``y`` and ``logits`` have shape (batch, k); the result has shape (batch,).
    """
    k = logits.shape[-1]
    p = softmax(logits, axis=-1)
    log_norm = pt.gammaln(pt.cast(k, logits.dtype)) + (pt.cast(k, logits.dtype) - 1.0) * float(np.log(temperature))
    log_sum = pt.log(pt.sum(p / y**temperature, axis=-1))
    sum_log = pt.sum(pt.log(p / y ** (temperature + 1.0)), axis=-1)
    return log_norm - pt.cast(k, logits.dtype) * log_sum + sum_log


def log_uniform(x, low, high):
    """Log density of U(low, high): ``-log(high - low)`` inside the interval, ``-inf`` outside.

    The paper's priors p(z) = U(z_low, z_hi) and p(y) = Cat(1/10) are uniform
    (eq. 1); the original drops their constant log densities from the bounds.
    """
    inside = pt.and_(pt.ge(x, low), pt.le(x, high))
    return pt.switch(inside, -float(np.log(high - low)), -np.inf)
