"""The five terms of the loss, each a batch mean to be minimised.

Names, symbols and equations (paper; ``design.md`` §1.5):

=====================  ===========  ==========================================
term                   symbol       equation
=====================  ===========  ==========================================
``labeled_elbo``       -J_f^l       eq. 3, forward bound on labeled (x, y)
``unlabeled_elbo``     -J_f^u       eq. 4, forward bound on unlabeled x
``reverse_elbo``       -J_r^u       eq. 17 as coded: reverse bound on (y, z)
``x_to_y_loss``        J_f^d        eq. 7, classifier loss on labeled x
``y_to_x_loss``        J_r^d        eq. 7, generator loss on labeled y
=====================  ===========  ==========================================

The total is eq. 8 negated, with the original's coefficients
(``original_code.md`` §3.2-3.3)::

    L = 0.1 labeled_elbo + 0.1 unlabeled_elbo + 0.1 reverse_elbo
        + 1 x_to_y_loss + 0.01 y_to_x_loss

that is ``-0.1 (J_f + J_r - 10 J_f^d - 0.1 J_r^d)``: App. D's
(alpha_f^d, alpha_r^d) = (10, 0.1) up to an overall 0.1. M2 sets the
reverse_elbo coefficient to 0 and keeps 0.01 y_to_x_loss, as the original's
M2 did (``docs/fidelity.md`` item 27).

Constant log priors are dropped, as in the original: log p(y), log p(z) and
log q(x) are uniform (eq. 1-2) and add nothing to the gradients.
"""

from collections import OrderedDict

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor.special import log_softmax

from parmesan_compat.distributions import log_bernoulli, log_concrete, log_normal
from untapped import ops
from untapped.presets import TERMS  # noqa: F401 - the terms' names, symbols and equations

#: ``logsumexp`` over a single importance sample leaves ``log(1 + 1e-5)`` in each
#: log-likelihood of the original (its ``sf`` guard); only the unlabeled bound
#: keeps one, the others cancel (``original_code.md`` §3.1).
SINGLE_SAMPLE_LOGSUMEXP = float(np.log1p(1e-5))
KL_CLIP = 1e-6


def log_q_z(z_tilde, z_mean, z_std, z_log_det):
    """log q_phi(z|x,y) by change of variables (App. A): ``sum_i log N(z~_i; mu_i, sigma_i) - log|dz/dz~|``."""
    return pt.sum(log_normal(z_tilde, z_mean, z_std), axis=-1) - z_log_det


def log_p_x(x, x_mean):
    """log p_theta(x|y,z) (eq. 1): ``sum_d log Bern(x_d; b_theta(y,z)_d)``, the mean clipped to [1e-5, 1-1e-5].

    When the mean is the decoder's sigmoid, one fused op computes the sigmoid,
    the clip, the log terms and the row sum (and, for the gradient, their
    derivative) in one pass (:func:`untapped.ops.bernoulli_log_lik_rows`).
    """
    fused = ops.bernoulli_log_lik_rows(x, x_mean)
    if fused is not None:
        return fused
    return pt.sum(log_bernoulli(x, x_mean), axis=-1)


def labeled_elbo(x, z_tilde, z_mean, z_std, z_log_det, x_mean):
    """-J_f^l, eq. 3, with z ~ q(z|x, y) and the constant log p(y) + log p(z) dropped::

        labeled_elbo = mean_n [ log q(z_n|x_n,y_n) - log p(x_n|y_n,z_n) ]
    """
    return pt.mean(log_q_z(z_tilde, z_mean, z_std, z_log_det) - log_p_x(x, x_mean))


def unlabeled_elbo(x, logits, y_sample, z_tilde, z_mean, z_std, z_log_det, x_mean, temperature=1.0):
    """-J_f^u, eq. 4, with y~ ~ Concrete(l(x)), z ~ q(z|x, y~) and constant priors dropped::

        unlabeled_elbo = mean_m [ log Conc(y~_m; l(x_m)) + log q(z_m|x_m,y~_m)
                                  - log p(x_m|y~_m,z_m) ] + log(1 + 1e-5)
    """
    log_q_y = log_concrete(y_sample, logits, temperature)
    log_q_yz = log_q_y + log_q_z(z_tilde, z_mean, z_std, z_log_det)
    return pt.mean(log_q_yz - log_p_x(x, x_mean)) + SINGLE_SAMPLE_LOGSUMEXP


def log_categorical(y, logits):
    """``sum_i y_i log softmax(l)_i``: log Cat(y; softmax(l)) for one-hot y (paper App. D's cross-entropy)."""
    return pt.sum(y * log_softmax(logits, axis=-1), axis=-1)


#: The density of the observed y in the reverse bound: the original's Concrete,
#: or the categorical one, which one-hot y need (the Concrete density of a
#: vertex of the simplex is -inf).
REVERSE_Y_DENSITIES = ("concrete", "categorical")


def reverse_elbo(y, logits, x_sample, x_mean, temperature=1.0, log_q_z_observed=None, y_density="concrete"):
    """-J_r^u, eq. 17 as the original codes it: z observed, x^ ~ p(x|y,z)::

        reverse_elbo = mean_k [ log p(x^_k|y_k,z_k) - log Conc(y_k; l(x^_k)) ]

    Eq. 17 also has ``+ log q(z|x,y)`` (the original omits it) and ``+ log q(x)``
    (a constant). Pass ``log_q_z_observed``, log q(z_k|x^_k,y_k) per row, for
    the paper's version; its negation is then part of the mean. With
    ``y_density='categorical'``, ``log Cat(y_k; softmax(l(x^_k)))`` replaces
    the Concrete density (for one-hot y, Alg. 1's unfeatured labels).

    x^ carries no gradient (see ``bernoulli_sample``): the decoder gets only the
    score term of log p(x^|y,z), and the classifier learns to read y_k from x^_k.
    """
    log_q_y = log_categorical(y, logits) if y_density == "categorical" else log_concrete(y, logits, temperature)
    per_row = log_p_x(x_sample, x_mean) - log_q_y
    if log_q_z_observed is not None:
        per_row = per_row - log_q_z_observed
    return pt.mean(per_row)


def x_to_y_loss(y_sample, y):
    """J_f^d, eq. 7: the original's clipped KL(y || y~) on a Concrete *sample* y~.

    With ``a = clip(y, 1e-6, 1)``, ``p = clip(y~, 1e-6, 1)`` and the leftover
    masses ``a_L = clip(1 - sum y, 1e-6, 1)``, ``p_L = clip(1 - sum y~, 1e-6, 1)``::

        x_to_y_loss = mean_n [ sum_i a_i (log a_i - log p_i) + a_L (log a_L - log p_L) ]

    For one-hot y of class c this is ``-log max(y~_c, 1e-6)`` up to terms of order 1e-6:
    a cross-entropy on a Gumbel-softmax sample.
    """
    a = pt.clip(y, KL_CLIP, 1.0)
    p = pt.clip(y_sample, KL_CLIP, 1.0)
    a_left = pt.clip(1.0 - pt.sum(y, axis=-1), KL_CLIP, 1.0)
    p_left = pt.clip(1.0 - pt.sum(y_sample, axis=-1), KL_CLIP, 1.0)
    kl = pt.sum(a * (pt.log(a) - pt.log(p)), axis=-1) + a_left * (pt.log(a_left) - pt.log(p_left))
    return pt.mean(kl)


def y_to_x_loss(x_sample, x):
    """J_r^d, eq. 7: the original's unsquared L2, ``mean_n || x^_n - x_n ||_2``, on a Bernoulli sample x^.

    x^ is drawn at the labeled pass's z ~ q(z|x,y) (the paper's Alg. 1 says
    z ~ p(z)). Through the sample it has zero gradient: a logged metric only.
    """
    return pt.mean(pt.sqrt(pt.sum(pt.sqr(x_sample - x), axis=-1)))


def all_terms(batch, labeled, unlabeled, unfeatured, temperature=1.0, reverse_y_density="concrete"):
    """The five terms from the three passes of :mod:`untapped.forward`, keyed as :data:`TERMS`."""
    z_args = ("z_tilde", "z_mean", "z_std", "z_log_det")
    log_q_z_observed = None
    if "z_tilde" in unfeatured:
        log_q_z_observed = log_q_z(*(unfeatured[k] for k in z_args))
    return OrderedDict(
        labeled_elbo=labeled_elbo(batch["labeled_x"], *(labeled[k] for k in z_args), labeled["x_mean"]),
        unlabeled_elbo=unlabeled_elbo(
            batch["unlabeled_x"],
            unlabeled["logits"],
            unlabeled["y_sample"],
            *(unlabeled[k] for k in z_args),
            unlabeled["x_mean"],
            temperature,
        ),
        reverse_elbo=reverse_elbo(
            batch["unfeatured_y"],
            unfeatured["logits"],
            unfeatured["x_sample"],
            unfeatured["x_mean"],
            temperature,
            log_q_z_observed,
            reverse_y_density,
        ),
        x_to_y_loss=x_to_y_loss(labeled["y_sample"], batch["labeled_y"]),
        y_to_x_loss=y_to_x_loss(labeled["x_sample"], batch["labeled_x"]),
    )


def total_loss(terms, coefficients):
    """``sum_t c_t * term_t`` over the terms with a non-zero coefficient (eq. 8, negated)."""
    active = [(coefficients[name], terms[name]) for name in terms if coefficients.get(name, 0.0) != 0.0]
    return sum(c * t for c, t in active)
