"""Assigning a digit to every dimension of y (paper §3, "we simply permute y").

The paper's greedy assignment (:func:`assign_permutation`, the original's
recursion corrected), the exact most probable one
(:func:`hungarian_permutation`), and the relabelling of ``q(y | x)``'s
columns by an assignment (:func:`permute_columns`).
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Lower clip of the scores before ``-log`` in :func:`hungarian_permutation`.
#: It only keeps ``log 0`` out of the cost matrix: probabilities this small
#: carry no evidence about which digit an image shows.
HUNGARIAN_CLIP = 1e-12


def _square_scores(scores):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square n x n matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return scores


def assign_permutation(scores):
    """The paper's digit assignment (§3), as the original's recursion, corrected.

    Parameters
    ----------
    scores : array (n, n)
        ``scores[k, i]``: how strongly the image of one-hot dimension ``k``
        shows digit ``i``, for instance ``p(digit = i | image_k)`` from the
        logistic-regression classifier.

    Returns
    -------
    labels : int array (n,)
        A permutation of ``0 .. n-1``; ``labels[k]`` is the digit that
        dimension ``k`` shows.

    The procedure (paper §3: "If j = argmax_i p(digit=i|image) is unique to
    a single dimension, assign that dimension the digit j. Use the highest
    probability to split ties otherwise"), in the recursive form of the
    original ``assign_permutation`` (``DEMO_mnist2.py:23-49``):

    1. Every dimension claims ``argmax_i scores[k, i]``. A digit claimed by
       exactly one dimension goes to it.
    2. The remaining dimensions (those in ties) and the remaining digits
       (contested or unclaimed; there are as many of each) form a smaller
       square problem.
    3. If no claim was unique, the tie for the smallest contested digit ``d``
       is split first: of the dimensions claiming ``d``, the one with the
       highest ``scores[k, d]`` takes ``d``, and both leave the problem.
    4. Solve the smaller problem the same way (claims are recomputed over
       the digits still open).

    Each step removes at least one dimension and one digit, so the result is
    always a permutation. Exact ties go to the lower index.

    **Declared deviation (a fix).** In the original, step 3 picks the winner
    as the argmax of column ``d`` over *all* remaining dimensions, including
    ones that claim another digit, and never sets the winner's label to
    ``d``: the winner keeps its own argmax. Whenever the winner claims
    another digit the result is not a permutation (a few percent of random
    matrices). For instance, with claims ``[0, 4, 0, 3, 3]`` and dimension 3
    scoring digit 0 higher than the two dimensions that claim it, the
    original returns ``[1, 4, 2, 3, 3]`` where this returns
    ``[0, 4, 2, 1, 3]``. Here the winner is chosen among the dimensions
    claiming ``d`` and is assigned ``d``. The original also lacks
    ``from collections import Counter`` and cannot run as committed. Its
    contested digit is ``dups[0]``, the first key of a ``Counter``; on the
    Python 2.7 / 3.5 of the time, dictionaries of small integers iterate
    roughly in ascending order, so we take the smallest contested digit.
    With that order, on random matrices where the original does return a
    permutation, this function returns the same one.

    On the typical case the two agree: with dimensions 5 and 6 both showing
    an 8 (dimension 6 more confidently), 7, 8, 9 showing 5, 9, 7 and no
    dimension showing a 6, dimension 6 gets the 8 and dimension 5 the 6:
    ``[0, 1, 2, 3, 4, 6, 8, 5, 9, 7]``.
    """
    return _assign(_square_scores(scores))


def _assign(scores):
    n = scores.shape[0]
    if n <= 1:
        return np.zeros(n, dtype=np.intp)
    labels = scores.argmax(axis=1)
    claims = np.bincount(labels, minlength=n)
    if (claims == 1).all():
        return labels
    # Unique claims stand; the tied dimensions compete for every digit that
    # nobody holds alone (as many digits as dimensions).
    tied_rows = np.flatnonzero(claims[labels] > 1)
    open_cols = np.flatnonzero(claims != 1)
    if tied_rows.size == n:
        # Nothing was settled, so recursing as is would not shrink the
        # problem: split one tie by the highest probability first.
        digit = np.flatnonzero(claims > 1)[0]
        claimants = np.flatnonzero(labels == digit)
        winner = claimants[scores[claimants, digit].argmax()]
        labels[winner] = digit
        tied_rows = tied_rows[tied_rows != winner]
        open_cols = open_cols[open_cols != digit]
    labels[tied_rows] = open_cols[_assign(scores[np.ix_(tied_rows, open_cols)])]
    return labels


def hungarian_permutation(scores, clip=HUNGARIAN_CLIP):
    """The most probable assignment of digits to dimensions.

    Solves ``max over permutations pi of prod_k scores[k, pi(k)]``, that is
    ``min sum_k -log(max(scores[k, pi(k)], clip))``, exactly with
    :func:`scipy.optimize.linear_sum_assignment` (the Hungarian method).
    This is the "correct assignment" alternative beside the paper's greedy
    procedure (:func:`assign_permutation`); the two agree whenever the
    per-dimension argmax is already a permutation.

    ``scores`` must be non-negative (probabilities). Returns ``labels`` with
    ``labels[k]`` the digit assigned to dimension ``k``.
    """
    scores = _square_scores(scores)
    if (scores < 0).any():
        raise ValueError("scores must be non-negative probabilities")
    rows, cols = linear_sum_assignment(-np.log(np.maximum(scores, clip)))
    labels = np.empty(scores.shape[0], dtype=np.intp)
    labels[rows] = cols
    return labels


ASSIGNMENTS = {"original": assign_permutation, "hungarian": hungarian_permutation}


def permute_columns(q, labels):
    """Relabel the columns of ``q(y | x)`` by the digits the dimensions show.

    ``q_perm[:, labels[k]] = q[:, k]``: the probability that the model put on
    dimension ``k`` becomes the probability of digit ``labels[k]`` (paper §3,
    "we simply permute y").
    """
    q = np.asarray(q)
    labels = np.asarray(labels)
    n = q.shape[1]
    if labels.shape != (n,) or not np.array_equal(np.sort(labels), np.arange(n)):
        raise ValueError(f"labels must be a permutation of 0..{n - 1}, got {labels}")
    q_perm = np.empty_like(q)
    q_perm[:, labels] = q
    return q_perm
