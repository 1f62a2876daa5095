"""Tests for untapped.evaluation: digit assignment, the 5-9 metric, the
classifier cache and the Figure 2 grid."""

import itertools
import math

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from matplotlib.image import imread
from sklearn.linear_model import LogisticRegression

from untapped import evaluation as ev
from untapped.evaluation import (
    accuracy,
    assign_permutation,
    cross_entropy,
    digit_classifier,
    discriminative_metric,
    hungarian_permutation,
    permute_columns,
    readings,
    save_digit_grid,
)


def is_permutation(labels, n):
    return labels.shape == (n,) and sorted(labels.tolist()) == list(range(n))


# --------------------------------------------------------------------------
# assign_permutation
# --------------------------------------------------------------------------

# Few distinct values make ties in the argmax and in the tie-breaking
# column likely; the structured variants force the degenerate cases.
ELEMENTS = st.one_of(
    st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)


@st.composite
def score_matrices(draw):
    n = draw(st.integers(1, 10))
    scores = draw(arrays(np.float64, (n, n), elements=ELEMENTS))
    variant = draw(st.sampled_from(["plain", "constant_rows", "one_digit", "all_constant"]))
    if variant == "constant_rows":
        rows = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))
        scores[rows] = draw(ELEMENTS)
    elif variant == "one_digit":
        # every row claims the same digit
        scores[:, draw(st.integers(0, n - 1))] += 1e4
    elif variant == "all_constant":
        scores[:] = draw(ELEMENTS)
    return scores


@settings(max_examples=400, deadline=None)
@given(score_matrices())
def test_assign_permutation_always_returns_a_permutation(scores):
    labels = assign_permutation(scores)
    assert is_permutation(labels, len(scores))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10).flatmap(lambda n: st.tuples(
    arrays(np.float64, (n, n), elements=st.floats(0, 1)), st.permutations(range(n)))))
def test_assign_permutation_is_the_argmax_when_that_is_a_permutation(case):
    scores, perm = case
    scores[np.arange(len(perm)), perm] += 2.0  # make perm the unique row argmax
    assert np.array_equal(assign_permutation(scores), perm)
    assert np.array_equal(hungarian_permutation(scores), perm)


def m2_like_scores():
    """Rows 5 and 6 both show an 8 (row 6 more confidently); no row shows a 6."""
    p = np.full((10, 10), 0.01)
    p[np.arange(5), np.arange(5)] = 0.9
    p[5, 8], p[5, 6] = 0.5, 0.3
    p[6, 8] = 0.7
    p[7, 5] = p[8, 9] = p[9, 7] = 0.8
    return p


def test_two_dimensions_showing_an_eight():
    p = m2_like_scores()
    assert p.argmax(1).tolist() == [0, 1, 2, 3, 4, 8, 8, 5, 9, 7]
    # the more confident dimension 6 takes the 8; dimension 5 gets the free 6
    assert assign_permutation(p).tolist() == [0, 1, 2, 3, 4, 6, 8, 5, 9, 7]


def test_notes_example_where_the_original_breaks():
    # Claims [0, 4, 0, 3, 3]. Dimension 3 claims 3 but scores digit 0 higher
    # than the claimants of 0 (dimensions 0 and 2), so the original's winner
    # for digit 0 is dimension 3, which keeps its 3: [1, 4, 2, 3, 3].
    p = np.array([[0.40, 0.10, 0.10, 0.30, 0.10],
                  [0.10, 0.10, 0.10, 0.10, 0.60],
                  [0.35, 0.10, 0.30, 0.15, 0.10],
                  [0.48, 0.00, 0.00, 0.52, 0.00],
                  [0.10, 0.10, 0.10, 0.60, 0.10]])
    assert p.argmax(1).tolist() == [0, 4, 0, 3, 3]
    # 1 keeps 4; 0 beats 2 for digit 0; 2 then claims 2 alone; 4 beats 3 for
    # digit 3 (0.60 > 0.52); 3 gets the last digit, 1.
    assert assign_permutation(p).tolist() == [0, 4, 2, 1, 3]


def test_all_rows_equal_goes_in_index_order():
    assert assign_permutation(np.ones((4, 4))).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("bad", [np.ones((2, 3)), np.ones(3), [[0.0, np.nan], [1.0, 0.0]]])
def test_assign_permutation_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        assign_permutation(bad)


# --------------------------------------------------------------------------
# hungarian_permutation
# --------------------------------------------------------------------------


def brute_force_best(p, clip=ev.HUNGARIAN_CLIP):
    """Every permutation's sum of -log(max(p, clip)); return the best and its cost."""
    n = len(p)
    costs = {perm: -sum(math.log(max(p[k, perm[k]], clip)) for k in range(n))
             for perm in itertools.permutations(range(n))}
    best = min(costs, key=costs.get)
    return np.array(best), costs[best]


@pytest.mark.parametrize("seed", range(12))
def test_hungarian_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 1 + seed % 7
    p = rng.dirichlet(np.full(n, 0.5), size=n)
    p[p < 0.02] = 0.0  # exercise the clip
    best, _ = brute_force_best(p)
    assert np.array_equal(hungarian_permutation(p), best)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6).flatmap(
    lambda n: arrays(np.float64, (n, n), elements=st.sampled_from([0.0, 0.2, 0.5, 1.0]))))
def test_hungarian_is_optimal_with_ties(p):
    labels = hungarian_permutation(p)
    assert is_permutation(labels, len(p))
    _, best_cost = brute_force_best(p)
    cost = -np.log(np.maximum(p[np.arange(len(p)), labels], ev.HUNGARIAN_CLIP)).sum()
    assert cost == pytest.approx(best_cost, rel=1e-12, abs=1e-9)


def test_hungarian_rejects_negative_scores():
    with pytest.raises(ValueError):
        hungarian_permutation(-np.eye(3))


# --------------------------------------------------------------------------
# permute_columns, cross_entropy, accuracy
# --------------------------------------------------------------------------


def test_permute_columns_moves_dimension_k_to_digit_labels_k():
    q = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    q_perm = permute_columns(q, np.array([2, 0, 1]))
    # digit 2 <- dimension 0, digit 0 <- dimension 1, digit 1 <- dimension 2
    assert np.array_equal(q_perm, [[0.2, 0.7, 0.1], [0.3, 0.2, 0.5]])
    with pytest.raises(ValueError):
        permute_columns(q, np.array([0, 0, 1]))


def test_cross_entropy_and_accuracy_closed_form():
    q_perm = np.array([[0.7, 0.2, 0.1],
                       [0.1, 0.1, 0.8],
                       [0.0, 0.6, 0.4],
                       [2e-7, 0.5, 0.5 - 2e-7]])
    digits = np.array([0, 2, 0, 0])
    # rows 2 and 3 fall under the clip at 1e-6
    expected = (-math.log(0.7) - math.log(0.8) - 2 * math.log(1e-6)) / 4
    assert cross_entropy(q_perm, digits) == pytest.approx(expected, rel=1e-12)
    assert cross_entropy(q_perm, digits, clip=1e-9) == pytest.approx(
        (-math.log(0.7) - math.log(0.8) - math.log(1e-9) - math.log(2e-7)) / 4, rel=1e-12)
    assert accuracy(q_perm, digits) == 0.5
    # the uniform prediction scores ln 10, M2's 2.30
    assert cross_entropy(np.full((3, 10), 0.1), [5, 7, 9]) == pytest.approx(math.log(10))


class FixedClassifier:
    """Stands in for the fitted logistic regression: fixed probabilities."""

    classes_ = np.arange(10)

    def __init__(self, probabilities):
        self.probabilities = probabilities

    def predict_proba(self, images):
        assert images.shape == (10, 784)
        return self.probabilities


@pytest.mark.parametrize("method", ["original", "hungarian"])
def test_discriminative_metric_glue(method):
    p = m2_like_scores()
    labels = np.array([0, 1, 2, 3, 4, 6, 8, 5, 9, 7])
    dimension_of = np.argsort(labels)  # the dimension that shows each digit
    digits = np.repeat(np.arange(5, 10), 3)
    q = np.full((len(digits), 10), 0.4 / 9)
    q[np.arange(len(digits)), dimension_of[digits]] = 0.6

    out = discriminative_metric(np.zeros((10, 784)), FixedClassifier(p), q, digits, method)
    assert np.array_equal(out["probabilities"], p)
    assert out["recognised"].tolist() == [0, 1, 2, 3, 4, 8, 8, 5, 9, 7]
    assert np.array_equal(out["labels"], labels)
    assert out["cross_entropy"] == pytest.approx(-math.log(0.6))
    assert out["accuracy"] == 1.0
    assert out["method"] == method


def test_discriminative_metric_checks_its_inputs():
    q, digits = np.full((2, 10), 0.1), np.array([5, 6])
    with pytest.raises(ValueError, match="method"):
        discriminative_metric(np.zeros((10, 784)), FixedClassifier(np.eye(10)), q, digits, "x")
    wrong = FixedClassifier(np.eye(10))
    wrong.classes_ = np.arange(1, 11)
    with pytest.raises(ValueError, match="classes"):
        discriminative_metric(np.zeros((10, 784)), wrong, q, digits)


# --------------------------------------------------------------------------
# digit_classifier and its cache
# --------------------------------------------------------------------------


@pytest.fixture
def toy_digits():
    """A small, learnable 10-class problem on binary 'images' of 16 pixels."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 30)
    prototypes = rng.random((10, 16))
    images = (rng.random((len(labels), 16)) < prototypes[labels]).astype(np.float32)
    return images, labels


@pytest.fixture
def fits(monkeypatch):
    """Count calls to LogisticRegression.fit (and let them run)."""
    calls = []
    real_fit = LogisticRegression.fit

    def counting_fit(self, X, y, *args, **kwargs):
        calls.append(len(y))
        return real_fit(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting_fit)
    return calls


def forbid_fit(monkeypatch):
    def no_fit(self, *args, **kwargs):
        raise AssertionError("fit called although a valid cache exists")

    monkeypatch.setattr(LogisticRegression, "fit", no_fit)


def cache_files(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir())


def test_classifier_cache_round_trip(tmp_path, toy_digits, fits, monkeypatch):
    images, labels = toy_digits
    first = digit_classifier(images, labels, cache_dir=tmp_path)
    assert fits == [len(labels)]
    files = cache_files(tmp_path)
    assert len(files) == 1 and files[0].endswith(".h5")  # no temp file left

    forbid_fit(monkeypatch)
    second = digit_classifier(images, labels, cache_dir=tmp_path)
    assert second is not first
    np.testing.assert_array_equal(second.predict_proba(images), first.predict_proba(images))
    assert np.array_equal(second.classes_, np.arange(10))
    assert second.get_params() == first.get_params()
    assert (first.predict(images) == labels).mean() > 0.8


def test_classifier_refits_for_other_data_or_settings(tmp_path, toy_digits, fits, monkeypatch):
    images, labels = toy_digits
    digit_classifier(images, labels, cache_dir=tmp_path)
    other = labels.copy()
    other[0] = 9
    digit_classifier(images, other, cache_dir=tmp_path)
    assert len(fits) == 2
    monkeypatch.setitem(ev.CLASSIFIER_SETTINGS, "C", 0.5)
    clf = digit_classifier(images, labels, cache_dir=tmp_path)
    assert len(fits) == 3 and clf.C == 0.5
    assert len(cache_files(tmp_path)) == 3


def truncate(path):
    path.write_bytes(path.read_bytes()[:400])


def drop_coef(path):
    with h5py.File(path, "a") as f:
        del f["coef"]


def tamper_hash(path):
    with h5py.File(path, "a") as f:
        f.attrs["data_sha256"] = "0" * 64


@pytest.mark.parametrize("corrupt", [
    lambda path: path.write_bytes(b"this is not an HDF5 file"),
    truncate,
    drop_coef,
    tamper_hash,
], ids=["garbage", "truncated", "missing-dataset", "wrong-hash"])
def test_corrupt_cache_is_refitted_and_replaced(tmp_path, toy_digits, fits, monkeypatch, corrupt):
    images, labels = toy_digits
    reference = digit_classifier(images, labels, cache_dir=tmp_path).predict_proba(images)
    (path,) = tmp_path.iterdir()
    corrupt(path)
    with pytest.warns(RuntimeWarning, match="unusable"):
        clf = digit_classifier(images, labels, cache_dir=tmp_path)
    assert len(fits) == 2
    np.testing.assert_allclose(clf.predict_proba(images), reference)
    assert cache_files(tmp_path) == [path.name]
    forbid_fit(monkeypatch)
    digit_classifier(images, labels, cache_dir=tmp_path)  # the replacement loads


def test_unwritable_cache_still_returns_a_classifier(tmp_path, toy_digits):
    images, labels = toy_digits
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="could not write"):
        clf = digit_classifier(images, labels, cache_dir=blocker)
    assert clf.predict_proba(images).shape == (len(labels), 10)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ev.default_cache_dir() == tmp_path / "xdg" / "untapped"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ev.default_cache_dir() == tmp_path / ".cache" / "untapped"


# --------------------------------------------------------------------------
# save_digit_grid
# --------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_save_digit_grid_writes_a_png(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.random((10, 784)) * 1.4 - 0.2  # out-of-range values get clipped
    labels = [0, 1, 2, 3, 4, 6, 8, 5, 9, 7]
    path = tmp_path / "digits_means.png"
    save_digit_grid(images, path, titles=[f"y={k} → {d}" for k, d in enumerate(labels)],
                    suptitle="untapped")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    # 5 panels of 1.6 in x 2 rows of 1.8 in, plus 0.5 in for the suptitle, at 100 dpi
    assert imread(path).shape == (410, 800, 4)
    assert cache_files(tmp_path) == ["digits_means.png"]

    save_digit_grid(images.reshape(10, 28, 28), path)  # overwrite; 28 x 28 input
    assert imread(path).shape == (360, 800, 4)
    assert cache_files(tmp_path) == ["digits_means.png"]


def test_save_digit_grid_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def half_written(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(PNG_SIGNATURE)
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", half_written)
    with pytest.raises(OSError, match="disk full"):
        save_digit_grid(np.zeros((10, 784)), tmp_path / "grid.png")
    assert list(tmp_path.iterdir()) == []


def test_save_digit_grid_needs_one_title_per_image(tmp_path):
    with pytest.raises(ValueError, match="title"):
        save_digit_grid(np.zeros((10, 784)), tmp_path / "grid.png", titles=["a"])


# ---------------------------------------------------------------------------
# The metric under each reading of the paper


class ByKindClassifier:
    """Fixed probabilities per set of canonical images (told apart by their first pixel)."""

    classes_ = np.arange(10)

    def __init__(self, by_marker):
        self.by_marker = by_marker

    def predict_proba(self, images):
        return self.by_marker[float(images[0, 0])]


def test_metric_readings_against_hand_computations():
    rng = np.random.default_rng(3)
    means, double = np.zeros((10, 784)), np.ones((10, 784))
    # Means: dimensions 5-9 show 6 5 8 9 7, cleanly; the double pass shows another permutation.
    shown = np.array([0, 1, 2, 3, 4, 6, 5, 8, 9, 7])
    p_means = np.full((10, 10), 0.01)
    p_means[np.arange(10), shown] = 0.91
    shown_double = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 8])
    p_double = np.full((10, 10), 0.01)
    p_double[np.arange(10), shown_double] = 0.91
    classifier = ByKindClassifier({0.0: p_means, 1.0: p_double})
    digits = rng.integers(5, 10, 50)
    q = rng.dirichlet(np.ones(10), size=50)

    out = ev.metric_readings({"means": means, "double_pass": double}, classifier, q, digits)

    def ce(q_digit):
        return float(np.mean(-np.log(np.maximum(q_digit, 1e-6))))

    dim_of = np.argsort(shown)  # dimension showing each digit
    rows = np.arange(50)
    assert out["default"]["cross_entropy"] == pytest.approx(ce(q[rows, dim_of[digits]]))
    assert out["unpermuted"]["cross_entropy"] == pytest.approx(ce(q[rows, digits]))
    assert out["hungarian"]["cross_entropy"] == pytest.approx(out["default"]["cross_entropy"])
    assert out["double_pass"]["cross_entropy"] == pytest.approx(ce(q[rows, np.argsort(shown_double)[digits]]))
    unseen = q[:, dim_of[5:]]  # columns of the dimensions showing 5..9, in digit order
    renorm = unseen / unseen.sum(axis=1, keepdims=True)
    assert out["renormalised"]["cross_entropy"] == pytest.approx(ce(renorm[rows, digits - 5]))
    assert out["renormalised"]["accuracy"] == pytest.approx(np.mean(renorm.argmax(axis=1) == digits - 5))
    # Five canonical images: here the assignment among 5-9 is the same as the full one.
    assert out["five_canonical"]["cross_entropy"] == pytest.approx(out["default"]["cross_entropy"])
    assert out["five_canonical_renormalised"]["cross_entropy"] == pytest.approx(out["renormalised"]["cross_entropy"])
    assert set(out) == set(ev.READINGS)


def test_five_canonical_reading_keeps_dimensions_0_to_4():
    # Dimension 5 looks like a 0; the full assignment moves digit 0 away from dimension 0, the
    # five-canonical reading assigns only among 5-9 and leaves 0-4 alone.
    shown = np.array([1, 0, 2, 3, 4, 0, 6, 7, 8, 9])
    p = np.full((10, 10), 0.01)
    p[np.arange(10), shown] = 0.91
    p[5, 5] = 0.05
    labels = readings._five_canonical_labels(p)
    assert labels.tolist()[:5] == [0, 1, 2, 3, 4]
    assert sorted(labels.tolist()[5:]) == [5, 6, 7, 8, 9] and labels[5] == 5


def test_renormalised_uniform_is_ln5():
    ce, _ = ev.renormalised_cross_entropy(np.full((4, 10), 0.1), [5, 6, 7, 9])
    assert ce == pytest.approx(math.log(5))


def test_readings_in_bits_per_term_and_of_the_class_averaged_q():
    """Independent NumPy: log base 2 of the picked probabilities, the ten terms -t_k ln q_k averaged,
    and -ln of q's class mean; the report's derivations from the default agree."""
    rng = np.random.default_rng(5)
    shown = np.array([0, 1, 2, 3, 4, 8, 6, 5, 9, 7])
    p = np.full((10, 10), 0.01)
    p[np.arange(10), shown] = 0.91
    classifier = ByKindClassifier({0.0: p, 1.0: p})
    digits = rng.integers(5, 10, 40)
    q = rng.dirichlet(np.full(10, 0.3), size=40)
    out = ev.metric_readings({"means": np.zeros((10, 784)), "double_pass": np.ones((10, 784))}, classifier, q, digits)

    q_true = np.maximum(q[np.arange(40), np.argsort(shown)[digits]], 1e-6)
    onehot = np.eye(10)[digits]
    q_perm = q[:, np.argsort(shown)]  # column d: the dimension showing digit d
    terms = -onehot * np.log(np.maximum(q_perm, 1e-6))  # (40, 10): nonzero only at the true digit
    assert out["bits"]["cross_entropy"] == pytest.approx(np.mean(np.log(1 / q_true) / np.log(2)))
    assert out["class_mean_terms"]["cross_entropy"] == pytest.approx(terms.mean(axis=1).mean())
    assert out["class_averaged_q"]["cross_entropy"] == pytest.approx(-np.mean(np.log(q.mean(axis=1))))
    assert out["class_averaged_q"]["cross_entropy"] == pytest.approx(2.302585093, abs=1e-9)  # ln 10, any q
    default = out["default"]["cross_entropy"]
    for name, derive in ev.DERIVED.items():
        assert derive(default) == pytest.approx(out[name]["cross_entropy"]), name
    assert out["bits"]["accuracy"] == out["default"]["accuracy"]
