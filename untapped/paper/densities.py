"""The model's log densities (paper eqs. 1-2, App. A), each per row: shape (rows,).

Built on the vendored Parmesan densities (:mod:`parmesan_compat.distributions`,
with the original's epsilons and clips):

- :func:`log_p_x`, the decoder's Bernoulli likelihood (eq. 1);
- :func:`log_q_z`, the encoder's density of z by change of variables (App. A);
- :func:`log_q_y_concrete`, the classifier's Concrete density of a soft y (eq. 2);
- :func:`log_q_y_categorical`, its categorical density of a one-hot y (App. D).

The uniform priors log p(y), log p(z) and log q(x) are constants (eq. 1-2),
dropped from the bounds as in the original.
"""

import pytensor.tensor as pt
from pytensor.tensor.special import log_softmax

from parmesan_compat.distributions import log_concrete, log_normal
from untapped.paper.kernels import PLAIN


def log_p_x(x, x_mean, kernels=PLAIN):
    """log p_theta(x|y,z) (eq. 1): ``sum_d log Bern(x_d; b_theta(y,z)_d)``, the mean clipped to [1e-5, 1-1e-5].

    ``x``, ``x_mean``: (rows, features). Computed by
    ``kernels.bernoulli_log_lik_rows`` (:mod:`untapped.paper.kernels`).
    """
    return kernels.bernoulli_log_lik_rows(x, x_mean)


def log_q_z(z_tilde, z_mean, z_std, z_log_det):
    """log q_phi(z|x,y) by change of variables (App. A): ``sum_i log N(z~_i; mu_i, sigma_i) - log|dz/dz~|``.

    ``z_tilde``, ``z_mean``, ``z_std``: (rows, latent); ``z_log_det``: (rows,).
    """
    return pt.sum(log_normal(z_tilde, z_mean, z_std), axis=-1) - z_log_det


def log_q_y_concrete(y, logits, temperature=1.0):
    """log Conc(y; softmax(l), tau) (eq. 2; Maddison et al. 2016, eq. 10) of a soft ``y``, (rows, classes)."""
    return log_concrete(y, logits, temperature)


def log_q_y_categorical(y, logits):
    """``sum_i y_i log softmax(l)_i``: log Cat(y; softmax(l)) for one-hot ``y`` (paper App. D's cross-entropy)."""
    return pt.sum(y * log_softmax(logits, axis=-1), axis=-1)
