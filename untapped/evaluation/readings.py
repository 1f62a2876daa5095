"""The digits 5-9 metric under each reading of the paper's text (paper §3; ``docs/fidelity.md`` item 29).

Which canonical images, which assignment and which cross-entropy (10-way or
renormalised over the digits 5-9) the paper means is not certain; these
functions compute the metric under every reading of :data:`READINGS`.
"""

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
    "five_canonical": "canonical images for one-hots 5-9 only, assigned among digits 5-9 (dimensions 0-4 keep 0-4), 10-way",
    "five_canonical_renormalised": "as five_canonical, q renormalised over the digits 5-9 (5-way)",
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


def _five_canonical_labels(probabilities):
    """Dimensions 0-4 keep digits 0-4; dimensions 5-9 get digits 5-9 by the paper's assignment on their scores."""
    labels = np.arange(probabilities.shape[0])
    labels[UNSEEN] = UNSEEN[assign_permutation(probabilities[np.ix_(UNSEEN, UNSEEN)])]
    return labels


def metric_readings(canonical, classifier, q, digits):
    """The digits 5-9 metric under every reading of :data:`READINGS`.

    ``canonical`` maps ``'means'`` and ``'double_pass'`` to the ten Figure 2
    images; ``q`` and ``digits`` are as in :func:`discriminative_metric`.
    Returns reading -> ``{cross_entropy, accuracy, labels}``.
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

    return {
        "default": ten_way(default),
        "unpermuted": ten_way(identity),
        "hungarian": ten_way(hungarian_permutation(scores["means"])),
        "double_pass": ten_way(assign_permutation(scores["double_pass"])),
        "renormalised": five_way(default),
        "five_canonical": ten_way(five),
        "five_canonical_renormalised": five_way(five),
    }
