"""The digits 5-9 cross-entropy metric, "discriminative generalisation" (paper §3).

The model's ``q(y | x)``, permuted by the digit each one-hot's canonical
image shows, scored by its cross-entropy (:func:`cross_entropy`) and
accuracy (:func:`accuracy`) on the digits 5-9; :func:`discriminative_metric`
does all of it in the default reading (``docs/paper.md``, *The digits 5-9 metric*).
"""

import numpy as np

from untapped.evaluation.assignment import ASSIGNMENTS, permute_columns

#: Lower clip of the probabilities in the cross-entropy, as in the original's
#: ``plotting_mnist.KL`` (eps = 1e-6).
CE_CLIP = 1e-6


def cross_entropy(q_perm, digits, clip=CE_CLIP):
    """Mean cross-entropy of the permuted predictions, in nats (paper §3).

    ``CE = mean_n -log max(q_perm[n, digit_n], clip)``.

    The clip follows the original's ``plotting_mnist.KL`` (eps = 1e-6), which
    for one-hot targets equals this cross-entropy up to terms of order 1e-5.
    A model that puts probability 1/10 on every digit scores ln 10 = 2.3026,
    M2's reported 2.30.
    """
    q_perm = np.asarray(q_perm, dtype=np.float64)
    digits = np.asarray(digits)
    picked = q_perm[np.arange(len(digits)), digits]
    return float(-np.log(np.maximum(picked, clip)).mean())


def accuracy(q_perm, digits):
    """Fraction of rows whose most probable (permuted) digit is the true one."""
    return float((np.asarray(q_perm).argmax(axis=1) == np.asarray(digits)).mean())


def discriminative_metric(canonical_images, classifier, q, digits, method="original"):
    """Discriminative generalisation on digits 5-9 (paper §3; M2 2.30, untapped 2.07).

    Parameters
    ----------
    canonical_images : array (n, D)
        One image per one-hot ``y = e_k`` (``n = 10``): the Figure 2 images,
        decoded at ``z_bar``.
    classifier
        Anything with ``predict_proba`` and ``classes_ == [0 .. n-1]``,
        normally :func:`digit_classifier`.
    q : array (N, n)
        The model's softmax ``q(y | x)`` on the evaluation images (digits
        5-9).
    digits : int array (N,)
        Their true digits.
    method : {'original', 'hungarian'}
        :func:`assign_permutation` (the paper's procedure, corrected) or
        :func:`hungarian_permutation`.

    Returns
    -------
    dict with
        ``probabilities`` (n, n): ``p(digit = i | canonical image k)``;
        ``recognised`` (n,): the classifier's argmax per canonical image,
        i.e. the digit each one-hot's image shows (may repeat);
        ``labels`` (n,): the assigned permutation, dimension ``k`` means
        digit ``labels[k]``;
        ``cross_entropy``: :func:`cross_entropy` of ``q`` permuted by
        ``labels``; ``accuracy``: :func:`accuracy` of the same;
        ``method``.
    """
    if method not in ASSIGNMENTS:
        raise ValueError(f"method must be one of {sorted(ASSIGNMENTS)}, got {method!r}")
    q = np.asarray(q)
    n = q.shape[1]
    if not np.array_equal(np.asarray(classifier.classes_), np.arange(n)):
        raise ValueError(f"classifier classes must be 0..{n - 1}, got {classifier.classes_}")
    probabilities = np.asarray(classifier.predict_proba(np.asarray(canonical_images)))
    if probabilities.shape != (n, n):
        raise ValueError(f"need {n} canonical images, one per one-hot; got {len(probabilities)}")
    labels = ASSIGNMENTS[method](probabilities)
    q_perm = permute_columns(q, labels)
    return {
        "probabilities": probabilities,
        "recognised": probabilities.argmax(axis=1),
        "labels": labels,
        "cross_entropy": cross_entropy(q_perm, digits),
        "accuracy": accuracy(q_perm, digits),
        "method": method,
    }
