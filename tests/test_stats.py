"""untapped.stats against closed forms and textbook values."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from untapped import stats


def test_describe_matches_the_t_interval_formula():
    values = [1.0, 2.0, 4.0, 7.0]
    out = stats.describe(values)
    mean, sd = 3.5, math.sqrt(((1 - 3.5) ** 2 + (2 - 3.5) ** 2 + (4 - 3.5) ** 2 + (7 - 3.5) ** 2) / 3)
    half = scipy_stats.t.ppf(0.975, 3) * sd / math.sqrt(4)
    assert out["n"] == 4 and out["mean"] == pytest.approx(mean) and out["sd"] == pytest.approx(sd)
    assert out["ci"] == pytest.approx([mean - half, mean + half])
    # t_{0.975, 3} = 3.182446 (printed tables)
    assert half == pytest.approx(3.182446 * sd / 2, rel=1e-6)


def test_describe_of_one_value_has_no_spread():
    assert stats.describe([2.5]) == {"n": 1, "mean": 2.5, "sd": None, "ci": None}


def test_paired_known_answer():
    """d = 1..5: mean 3, sd sqrt(2.5), t = 3 sqrt(5) / sqrt(2.5) = 4.2426 (df 4, p = 0.01324);
    Wilcoxon with all five differences positive: W = 0, exact two-sided p = 2 / 2^5 = 0.0625."""
    y = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    x = y + np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = stats.paired(x, y)
    assert out["n"] == 5 and out["mean_difference"] == pytest.approx(3.0)
    assert out["sd_difference"] == pytest.approx(math.sqrt(2.5))
    assert out["t"] == pytest.approx(3 * math.sqrt(5) / math.sqrt(2.5))
    assert out["t_p"] == pytest.approx(0.013236, abs=2e-6)
    assert out["wilcoxon"] == 0.0 and out["wilcoxon_p"] == pytest.approx(0.0625)
    assert out["d_z"] == pytest.approx(3.0 / math.sqrt(2.5))
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, 4}
    assert out["ci"] == pytest.approx([3 - half, 3 + half], rel=1e-6)
    assert out["x_better"] == 0


def test_paired_sign_and_degenerate_cases():
    out = stats.paired([1.0, 2.0, 0.5], [2.0, 2.5, 1.0])
    assert out["mean_difference"] < 0 and out["x_better"] == 3
    same = stats.paired([1.0, 2.0], [1.0, 2.0])
    assert same["mean_difference"] == 0 and same["t"] is None and same["wilcoxon"] is None and same["d_z"] is None
    assert stats.paired([1.0], [2.0])["t"] is None
    with pytest.raises(ValueError):
        stats.paired([1.0, 2.0], [1.0])


def test_format_p():
    assert stats.format_p(None) == "n/a"
    assert stats.format_p(0.0004) == "< 0.001"
    assert stats.format_p(0.01324) == "0.0132"


def test_adjust_is_benjamini_hochberg():
    """p = (0.01, 0.04, 0.03, 0.2), m = 4. Sorted 0.01, 0.03, 0.04, 0.2; m p_(i) / i = 0.04, 0.06, 0.0533, 0.2;
    the running minimum from the largest down gives 0.04, 0.0533, 0.0533, 0.2."""
    out = stats.adjust([0.01, 0.04, None, 0.03, 0.2])
    assert out[2] is None
    assert [out[i] for i in (0, 1, 3, 4)] == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert stats.adjust([None]) == [None] and stats.adjust([]) == []
    assert stats.adjust([0.5, 0.9]) == pytest.approx([0.9, 0.9])
