"""The digits 5-9 metric under each reading of the paper's text (paper §3; ``docs/fidelity.md`` item 29).

Which canonical images, which assignment and which cross-entropy (10-way or
renormalised over the digits 5-9, in nats or in bits, of q or of q averaged
over the classes) the paper means is not certain; these functions compute
the metric under every reading of :data:`READINGS`.

Three readings are functions of the default reading alone, so a study's
report can derive them for runs whose ``metrics.json`` predates them
(:data:`DERIVED`): in bits the cross-entropy is divided by ln 2; the mean of
the ten terms ``-t_k log q_k`` is the 10-way cross-entropy divided by 10;
and ``-log`` of q(y|x) averaged over the ten classes is ln 10 = 2.303 for
any model, because every row of q sums to 1. The last one equals M2's 2.30
in the paper and cannot give untapped's 2.07: a sign of how the paper's M2
figure may have arisen, not a reading to adopt.
"""

import math

import numpy as np

from untapped.evaluation.assignment import assign_permutation, hungarian_permutation, permute_columns
from untapped.evaluation.metric import CE_CLIP, accuracy, cross_entropy

#: Reading name -> what it computes. ``default`` is :func:`discriminative_metric`.
READINGS = {
    "default": "Figure 2 means, the paper's assignment of all 10 dimensions, 10-way cross-entropy",
    "unpermuted": "q(y|x) as it is, 10-way cross-entropy",
    "hungarian": "Figure 2 means, Hungarian assignment of all 10 dimensions, 10-way cross-entropy",
    "double_pass": "the original's thresholded double-pass images, the paper's assignment, 10-way",
    "renormalised": "the default assignment, q renormalised over the five digits 5-9 (5-way)",
    "five_canonical": (
        "canonical images for one-hots 5-9 only, assigned among digits 5-9 (dimensions 0-4 keep 0-4), 10-way"
    ),
    "five_canonical_renormalised": "as five_canonical, q renormalised over the digits 5-9 (5-way)",
    "bits": "as default, in bits (log base 2): the default divided by ln 2",
    "class_mean_terms": "as default, the ten terms -t_k log q_k averaged instead of summed: the default divided by 10",
    "class_averaged_q": "-log of q(y|x) averaged over the ten classes before the log: ln 10 = 2.303 for any model",
}

#: Readings that are functions of the ``default`` cross-entropy alone: name -> that function.
DERIVED = {
    "bits": lambda ce: ce / math.log(2),
    "class_mean_terms": lambda ce: ce / 10,
    "class_averaged_q": lambda ce: math.log(10),
}

#: The digits without labels in the paper's task, and the dimensions told nothing.
UNSEEN = np.arange(5, 10)


def renormalised_cross_entropy(q_perm, digits, columns=UNSEEN, clip=CE_CLIP):
    """Cross-entropy and accuracy of ``q_perm`` restricted to ``columns`` and renormalised.

    ``q'_n,j = q_perm[n, c_j] / sum_j q_perm[n, c_j]``, then
    ``CE = mean_n -log max(q'_n,digit_n, clip)``; every ``digits[n]`` must be
    in ``columns``. A uniform prediction over five columns scores ln 5 = 1.609.
    """
    columns = np.asarray(columns)
    where = {int(c): j for j, c in enumerate(columns)}
    target = np.array([where[int(d)] for d in np.asarray(digits)])
    sub = np.asarray(q_perm, dtype=np.float64)[:, columns]
    sub = sub / sub.sum(axis=1, keepdims=True)
    picked = sub[np.arange(len(target)), target]
    return float(-np.log(np.maximum(picked, clip)).mean()), float((sub.argmax(axis=1) == target).mean())


def class_averaged_cross_entropy(q, clip=CE_CLIP):
    """``mean_n -log max(mean_k q[n, k], clip)``: q averaged over the classes before the log.

    The digit does not enter: every row of q sums to 1, so its class mean is
    1/10 and the value is ln 10 = 2.303 whatever the model learnt.
    """
    q = np.asarray(q, dtype=np.float64)
    return float(-np.log(np.maximum(q.mean(axis=1), clip)).mean())


def _five_canonical_labels(probabilities):
    """Dimensions 0-4 keep digits 0-4; dimensions 5-9 get digits 5-9 by the paper's assignment on their scores."""
    labels = np.arange(probabilities.shape[0])
    labels[UNSEEN] = UNSEEN[assign_permutation(probabilities[np.ix_(UNSEEN, UNSEEN)])]
    return labels


def metric_readings(canonical, classifier, q, digits):
    """The digits 5-9 metric under every reading of :data:`READINGS`.

    ``canonical`` maps ``'means'`` and ``'double_pass'`` to the ten Figure 2
    images; ``q`` and ``digits`` are as in :func:`discriminative_metric`.
    Returns reading -> ``{cross_entropy, accuracy, labels}``; the readings
    that only rescale a cross-entropy or do not depend on the digit keep the
    default's accuracy and labels.
    """
    q = np.asarray(q, dtype=np.float64)
    scores = {kind: np.asarray(classifier.predict_proba(np.asarray(images))) for kind, images in canonical.items()}
    default = assign_permutation(scores["means"])
    five = _five_canonical_labels(scores["means"])
    identity = np.arange(q.shape[1])

    def ten_way(labels):
        q_perm = permute_columns(q, labels)
        return dict(cross_entropy=cross_entropy(q_perm, digits), accuracy=accuracy(q_perm, digits), labels=labels)

    def five_way(labels):
        ce, acc = renormalised_cross_entropy(permute_columns(q, labels), digits)
        return dict(cross_entropy=ce, accuracy=acc, labels=labels)

    base = ten_way(default)
    q_perm = permute_columns(q, default)
    rows = np.arange(len(digits))
    picked = np.maximum(q_perm[rows, np.asarray(digits)], CE_CLIP)
    return {
        "default": base,
        "unpermuted": ten_way(identity),
        "hungarian": ten_way(hungarian_permutation(scores["means"])),
        "double_pass": ten_way(assign_permutation(scores["double_pass"])),
        "renormalised": five_way(default),
        "five_canonical": ten_way(five),
        "five_canonical_renormalised": five_way(five),
        "bits": dict(base, cross_entropy=float(-np.log2(picked).mean())),
        "class_mean_terms": dict(base, cross_entropy=float(-np.log(picked).mean() / q.shape[1])),
        "class_averaged_q": dict(base, cross_entropy=class_averaged_cross_entropy(q)),
    }
