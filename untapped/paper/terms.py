"""The five terms of the loss, each a batch mean to be minimised (paper eqs. 3-8, 17).

Names, symbols and equations (paper; ``docs/paper.md``;
:data:`untapped.presets.TERMS`):

=====================  ===========  ==========================================
term                   symbol       equation
=====================  ===========  ==========================================
``labeled_elbo``       -J_f^l       eq. 3, forward bound on labeled (x, y)
``unlabeled_elbo``     -J_f^u       eq. 4, forward bound on unlabeled x
``reverse_elbo``       -J_r^u       eq. 5 with z observed (App. B, eq. 17),
                                    as coded: reverse bound on (y, z)
``x_to_y_loss``        J_f^d        eq. 7, classifier loss on labeled x
``y_to_x_loss``        J_r^d        eq. 7, generator loss on labeled y
=====================  ===========  ==========================================

The total is eq. 8 negated, with the original's coefficients
(``DEMO_mnist.py:86-88``, ``S2S_DGM.py:1326-1360``; :data:`untapped.presets.PRESETS`)::

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

from untapped.paper.densities import log_p_x, log_q_y_categorical, log_q_y_concrete, log_q_z
from untapped.paper.kernels import PLAIN
from untapped.presets import TERMS  # noqa: F401 - the names all_terms keys its terms by

#: ``logsumexp`` over a single importance sample leaves ``log(1 + 1e-5)`` in each
#: log-likelihood of the original (its ``sf`` guard); only the unlabeled bound
#: keeps one, the others cancel (the original's ``M12.py:1113-1134``).
SINGLE_SAMPLE_LOGSUMEXP = float(np.log1p(1e-5))
KL_CLIP = 1e-6

#: The density of the observed y in the reverse bound: the original's Concrete,
#: or the categorical one, which one-hot y need (the Concrete log density of a
#: vertex of the simplex is not finite: NaN as coded, -inf in the limit).
REVERSE_Y_DENSITIES = ("concrete", "categorical")


def _log_q_z(values):
    return log_q_z(values.z_tilde, values.z_mean, values.z_std, values.z_log_det)


def labeled_elbo(x, labeled, kernels=PLAIN):
    """-J_f^l, eq. 3: the forward bound on labeled (x, y), negated, as a batch mean.

    With z ~ q(z|x, y) (a :class:`~untapped.paper.passes.LabeledPass`) and the
    constant log p(y) + log p(z) dropped::

        labeled_elbo = mean_n [ log q(z_n|x_n,y_n) - log p(x_n|y_n,z_n) ]

    Parameters
    ----------
    x : TensorVariable, (rows, n_features)
        The labeled images.
    labeled : LabeledPass
        Their pass; uses ``z_tilde``, ``z_mean``, ``z_std`` (rows, n_latent),
        ``z_log_det`` (rows,) and ``x_mean`` (rows, n_features).
    kernels : PlainKernels or FastKernels, optional
        Computes log p(x|y,z) (:mod:`untapped.paper.kernels`); default ``PLAIN``.

    Returns
    -------
    TensorVariable, ()
        The batch mean, to be minimised.
    """
    return pt.mean(_log_q_z(labeled) - log_p_x(x, labeled.x_mean, kernels))


def unlabeled_elbo(x, unlabeled, temperature=1.0, kernels=PLAIN):
    """-J_f^u, eq. 4: the forward bound on unlabeled x, negated, as a batch mean.

    With y~ ~ Concrete(l(x)), z ~ q(z|x, y~) (an
    :class:`~untapped.paper.passes.UnlabeledPass`) and constant priors dropped::

        unlabeled_elbo = mean_m [ log Conc(y~_m; l(x_m)) + log q(z_m|x_m,y~_m)
                                  - log p(x_m|y~_m,z_m) ] + log(1 + 1e-5)

    Parameters
    ----------
    x : TensorVariable, (rows, n_features)
        The unlabeled images.
    unlabeled : UnlabeledPass
        Their pass; uses ``y_sample``, ``logits`` (rows, n_classes), ``z_tilde``,
        ``z_mean``, ``z_std`` (rows, n_latent), ``z_log_det`` (rows,) and ``x_mean`` (rows, n_features).
    temperature : float, optional
        The Concrete temperature tau of log Conc; default 1.
    kernels : PlainKernels or FastKernels, optional
        Computes log p(x|y,z) (:mod:`untapped.paper.kernels`); default ``PLAIN``.

    Returns
    -------
    TensorVariable, ()
        The batch mean, to be minimised.
    """
    log_q_y = log_q_y_concrete(unlabeled.y_sample, unlabeled.logits, temperature)
    log_q_yz = log_q_y + _log_q_z(unlabeled)
    return pt.mean(log_q_yz - log_p_x(x, unlabeled.x_mean, kernels)) + SINGLE_SAMPLE_LOGSUMEXP


def reverse_elbo(y, unfeatured, temperature=1.0, y_density="concrete", kernels=PLAIN):
    """-J_r^u: eq. 5 with z observed (App. B's eq. 17), as the original codes it (a batch mean).

    With x^ ~ p(x|y,z)::

        reverse_elbo = mean_k [ log p(x^_k|y_k,z_k) - log Conc(y_k; l(x^_k)) ]

    Eq. 17 also has ``+ log q(z|x,y)`` (the original omits it) and ``+ log q(x)``
    (a constant). When ``unfeatured`` (an :class:`~untapped.paper.passes.UnfeaturedPass`)
    encoded x^ (``encode_generated``), log q(z_k|x^_k,y_k) of the observed z is
    part of the mean, with a minus: the paper's version. With
    ``y_density='categorical'``, ``log Cat(y_k; softmax(l(x^_k)))`` replaces
    the Concrete density (for one-hot y, Alg. 1's unfeatured labels).

    x^ carries no gradient (see ``bernoulli_sample``): the decoder gets only the
    score term of log p(x^|y,z), and the classifier learns to read y_k from x^_k.

    Parameters
    ----------
    y : TensorVariable, (rows, n_classes)
        The unfeatured labels y_k.
    unfeatured : UnfeaturedPass
        Their pass; uses ``logits`` (rows, n_classes), ``x_sample`` and ``x_mean``
        (rows, n_features), and, if present, ``z_tilde``, ``z_mean``, ``z_std``
        (rows, n_latent) and ``z_log_det`` (rows,).
    temperature : float, optional
        The Concrete temperature tau; default 1.
    y_density : {'concrete', 'categorical'}, optional
        The density of the observed y (:data:`REVERSE_Y_DENSITIES`); default ``'concrete'``,
        the original's.
    kernels : PlainKernels or FastKernels, optional
        Computes log p(x|y,z) (:mod:`untapped.paper.kernels`); default ``PLAIN``.

    Returns
    -------
    TensorVariable, ()
        The batch mean, to be minimised.

    Raises
    ------
    ValueError
        If ``y_density`` is not one of :data:`REVERSE_Y_DENSITIES`.
    """
    log_q_z_observed = None if unfeatured.z_tilde is None else _log_q_z(unfeatured)
    return _reverse_elbo(y, unfeatured, temperature, y_density, kernels, log_q_z_observed)


def _check_reverse_y_density(y_density):
    if y_density not in REVERSE_Y_DENSITIES:
        raise ValueError(f"unknown reverse_y_density {y_density!r}; choose one of {', '.join(REVERSE_Y_DENSITIES)}")


def _reverse_elbo(y, unfeatured, temperature, y_density, kernels, log_q_z_observed):
    _check_reverse_y_density(y_density)
    if y_density == "categorical":
        log_q_y = log_q_y_categorical(y, unfeatured.logits)
    else:
        log_q_y = log_q_y_concrete(y, unfeatured.logits, temperature)
    per_row = log_p_x(unfeatured.x_sample, unfeatured.x_mean, kernels) - log_q_y
    if log_q_z_observed is not None:
        per_row = per_row - log_q_z_observed
    return pt.mean(per_row)


def x_to_y_loss(y_sample, y):
    """J_f^d, eq. 7: the original's clipped KL(y || y~) on a Concrete *sample* y~, both (rows, n_classes).

    With ``a = clip(y, 1e-6, 1)``, ``p = clip(y~, 1e-6, 1)`` and the leftover
    masses ``a_L = clip(1 - sum y, 1e-6, 1)``, ``p_L = clip(1 - sum y~, 1e-6, 1)``::

        x_to_y_loss = mean_n [ sum_i a_i (log a_i - log p_i) + a_L (log a_L - log p_L) ]

    For one-hot y of class c this is ``-log max(y~_c, 1e-6)`` up to terms of order 1e-6:
    a cross-entropy on a Gumbel-softmax sample.

    Parameters
    ----------
    y_sample : TensorVariable, (rows, n_classes)
        The labeled pass's Concrete sample y~.
    y : TensorVariable, (rows, n_classes)
        The labels, one-hot.

    Returns
    -------
    TensorVariable, ()
        The batch mean, to be minimised.
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

    Parameters
    ----------
    x_sample : TensorVariable, (rows, n_features)
        The labeled pass's Bernoulli sample x^.
    x : TensorVariable, (rows, n_features)
        The labeled images.

    Returns
    -------
    TensorVariable, ()
        The batch mean.
    """
    return pt.mean(pt.sqrt(pt.sum(pt.sqr(x_sample - x), axis=-1)))


def all_terms(batch, labeled, unlabeled, unfeatured, temperature=1.0, reverse_y_density="concrete", kernels=PLAIN):
    """The five terms from the three passes of :mod:`untapped.paper.passes`, keyed as :data:`TERMS`.

    Parameters
    ----------
    batch : mapping of str to TensorVariable
        The batch arrays (:func:`~untapped.paper.passes.symbolic_batch`); uses ``labeled_x``
        (rows, n_features), ``labeled_y`` (rows, n_classes), ``unlabeled_x`` (rows, n_features)
        and ``unfeatured_y`` (rows, n_classes), each source with its own rows.
    labeled : LabeledPass
        The labeled pass.
    unlabeled : UnlabeledPass
        The unlabeled pass.
    unfeatured : UnfeaturedPass
        The unfeatured pass.
    temperature : float, optional
        The Concrete temperature tau; default 1.
    reverse_y_density : {'concrete', 'categorical'}, optional
        :func:`reverse_elbo`'s ``y_density``; default ``'concrete'``.
    kernels : PlainKernels or FastKernels, optional
        Computes log p(x|y,z) (:mod:`untapped.paper.kernels`); default ``PLAIN``.

    Returns
    -------
    OrderedDict of str to TensorVariable
        ``labeled_elbo``, ``unlabeled_elbo``, ``reverse_elbo``, ``x_to_y_loss``,
        ``y_to_x_loss``: each a batch mean, shape ().

    Raises
    ------
    ValueError
        If ``reverse_y_density`` is not one of :data:`REVERSE_Y_DENSITIES`.
    """
    _check_reverse_y_density(reverse_y_density)
    # log q(z|x^,y) first, as the terms' graph has always been built (the
    # order of construction is the order PyTensor adds up gradients in).
    log_q_z_observed = None if unfeatured.z_tilde is None else _log_q_z(unfeatured)
    terms = OrderedDict(
        labeled_elbo=labeled_elbo(batch["labeled_x"], labeled, kernels),
        unlabeled_elbo=unlabeled_elbo(batch["unlabeled_x"], unlabeled, temperature, kernels),
        reverse_elbo=_reverse_elbo(
            batch["unfeatured_y"], unfeatured, temperature, reverse_y_density, kernels, log_q_z_observed
        ),
        x_to_y_loss=x_to_y_loss(labeled.y_sample, batch["labeled_y"]),
        y_to_x_loss=y_to_x_loss(labeled.x_sample, batch["labeled_x"]),
    )
    return terms


def total_loss(terms, coefficients):
    """``sum_t c_t * term_t`` over the terms with a non-zero coefficient (eq. 8, negated).

    Parameters
    ----------
    terms : mapping of str to TensorVariable
        The terms, each of shape () (:func:`all_terms`).
    coefficients : mapping of str to float
        Each term's coefficient c_t; a term missing from it counts as 0.

    Returns
    -------
    TensorVariable, ()
        The loss to minimise (the integer 0 if every coefficient is 0).
    """
    active = [(coefficients[name], terms[name]) for name in terms if coefficients.get(name, 0.0) != 0.0]
    return sum(c * t for c, t in active)
