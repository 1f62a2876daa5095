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
    """log p_theta(x|y,z) (eq. 1), the decoder's Bernoulli log-likelihood per row.

    ``sum_d log Bern(x_d; b_theta(y,z)_d)``, the mean clipped to [1e-5, 1-1e-5],
    computed by ``kernels.bernoulli_log_lik_rows``.

    Parameters
    ----------
    x : TensorVariable, (rows, n_features)
        Binary images: observed (labeled, unlabeled) or sampled x^ (unfeatured).
    x_mean : TensorVariable, (rows, n_features)
        The decoder's Bernoulli mean b_theta(y, z), in (0, 1).
    kernels : PlainKernels or FastKernels, optional
        Computes the row sum (:mod:`untapped.paper.kernels`); default ``PLAIN``.

    Returns
    -------
    TensorVariable, (rows,)
        log p_theta(x_n|y_n,z_n) for each row.
    """
    return kernels.bernoulli_log_lik_rows(x, x_mean)


def log_q_z(z_tilde, z_mean, z_std, z_log_det):
    """log q_phi(z|x,y) per row, by change of variables (App. A).

    ``sum_i log N(z~_i; mu_i, sigma_i) - log|dz/dz~|``: the Gaussian density of
    the pre-flow draw z~ less the flow's log-determinant
    (:func:`~untapped.paper.flow.logistic_flow_log_det`).

    Parameters
    ----------
    z_tilde : TensorVariable, (rows, n_latent)
        The Gaussian draw z~ before the flow (or the observed z mapped back, eq. 17).
    z_mean : TensorVariable, (rows, n_latent)
        The encoder's mean mu.
    z_std : TensorVariable, (rows, n_latent)
        The encoder's standard deviation sigma (not a log-variance).
    z_log_det : TensorVariable, (rows,)
        log|det dz/dz~| at ``z_tilde``.

    Returns
    -------
    TensorVariable, (rows,)
        log q_phi(z_n|x_n,y_n) for each row.
    """
    return pt.sum(log_normal(z_tilde, z_mean, z_std), axis=-1) - z_log_det


def log_q_y_concrete(y, logits, temperature=1.0):
    """log Conc(y; softmax(l), tau) of a soft ``y`` per row (eq. 2; Maddison et al. 2016, eq. 10).

    The classifier's Concrete density, unclipped as in the original
    (:func:`parmesan_compat.distributions.log_concrete`): a ``y`` entry that
    underflows to 0, such as a one-hot label's, gives inf or NaN.

    Parameters
    ----------
    y : TensorVariable, (rows, n_classes)
        A point of the simplex: a Concrete sample y~, or an unfeatured label.
    logits : TensorVariable, (rows, n_classes)
        The classifier's logits l(x).
    temperature : float, optional
        The Concrete temperature tau (default 1, the original's).

    Returns
    -------
    TensorVariable, (rows,)
        log Conc(y_n; softmax(l_n), tau) for each row.
    """
    return log_concrete(y, logits, temperature)


def log_q_y_categorical(y, logits):
    """log Cat(y; softmax(l)) of a one-hot ``y`` per row: ``sum_i y_i log softmax(l)_i`` (paper App. D's cross-entropy).

    Parameters
    ----------
    y : TensorVariable, (rows, n_classes)
        One-hot labels.
    logits : TensorVariable, (rows, n_classes)
        The classifier's logits l(x).

    Returns
    -------
    TensorVariable, (rows,)
        ``sum_i y_ni log softmax(l_n)_i`` for each row.
    """
    return pt.sum(y * log_softmax(logits, axis=-1), axis=-1)
