"""untapped.study.stats against closed forms and textbook values."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from untapped.study import stats


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


def test_describe_without_spread_has_a_point_interval():
    assert stats.describe([2.5, 2.5, 2.5])["ci"] == [2.5, 2.5]


def test_tost_against_the_closed_form():
    """d = 0.1, -0.2, 0.3, 0.0, 0.15: t = (mean +- margin) / (sd / sqrt(n)), one-sided t tails with 4 df."""
    d = np.array([0.1, -0.2, 0.3, 0.0, 0.15])
    margin = 0.5
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(5)
    out = stats.tost(d, margin)
    assert out["t_lower"] == pytest.approx((mean + margin) / se)
    assert out["p_lower"] == pytest.approx(scipy_stats.t.sf((mean + margin) / se, 4))
    assert out["t_upper"] == pytest.approx((mean - margin) / se)
    assert out["p_upper"] == pytest.approx(scipy_stats.t.cdf((mean - margin) / se, 4))
    assert out["p"] == pytest.approx(max(out["p_lower"], out["p_upper"]))
    half = 2.131847 * se  # t_{0.95, 4}, printed tables: the 90% interval
    assert out["ci"] == pytest.approx([mean - half, mean + half], rel=1e-6)
    # Equivalent exactly when the 90% interval lies inside the margin.
    assert out["equivalent"] and -margin < out["ci"][0] and out["ci"][1] < margin
    narrow = stats.tost(d, 0.1)
    assert not narrow["equivalent"] and narrow["ci"][1] > 0.1
    assert stats.tost([0.1], 0.5) is None and stats.tost([0.1, 0.1], 0.5) is None


def _binomial_two_sided(b, n):
    """Exact two-sided p of b successes in n at 1/2: twice the smaller tail, at most 1."""
    k = min(b, n - b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def test_mcnemar_exact_against_the_binomial_closed_form():
    x = [True] * 6 + [False] * 4 + [True] * 3 + [False] * 2   # untapped: 6 yes/no, 4 no/yes, 3 yes/yes, 2 no/no
    y = [False] * 6 + [True] * 4 + [True] * 3 + [False] * 2
    out = stats.mcnemar_exact(x, y)
    assert out["table"] == [[3, 6], [4, 2]] and out["discordant"] == 10 and out["x_only"] == 6
    assert out["p"] == pytest.approx(_binomial_two_sided(6, 10))  # 0.753906
    assert out["p"] == pytest.approx(0.75390625)
    lopsided = stats.mcnemar_exact([True] * 7 + [False], [False] * 7 + [False])
    assert lopsided["p"] == pytest.approx(2 / 2 ** 7)
    assert stats.mcnemar_exact([True, False], [True, False])["p"] == 1.0
    with pytest.raises(ValueError):
        stats.mcnemar_exact([True], [True, False])


def test_running_mean_is_the_mean_of_the_first_k():
    d = np.array([0.3, -0.1, 0.2, 0.05])
    out = stats.running_mean(d)
    assert [s["pairs"] for s in out] == [1, 2, 3, 4]
    assert out[0]["ci"] is None
    for s in out:
        head = d[: s["pairs"]]
        assert s["mean"] == pytest.approx(head.mean())
        if s["pairs"] > 1:
            half = scipy_stats.t.ppf(0.975, s["pairs"] - 1) * head.std(ddof=1) / math.sqrt(s["pairs"])
            assert s["ci"] == pytest.approx([head.mean() - half, head.mean() + half])


def test_paired_t_power_matches_the_plan_and_a_simulation():
    """docs/study-plan.md: sd 0.264, power 0.29 (10 pairs) and 0.81 (35 pairs) at 0.13 nats, 0.69 at 0.23 with 10."""
    assert stats.paired_t_power(10, 0.13, 0.264) == pytest.approx(0.29, abs=0.005)
    assert stats.paired_t_power(35, 0.13, 0.264) == pytest.approx(0.81, abs=0.005)
    assert stats.paired_t_power(10, 0.23, 0.264) == pytest.approx(0.69, abs=0.005)
    assert stats.paired_t_power(10, 0.0, 0.264) == pytest.approx(0.05)
    rng = np.random.default_rng(0)
    d = rng.normal(0.13, 0.264, size=(20000, 10))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(10))
    simulated = np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, 9))
    assert stats.paired_t_power(10, 0.13, 0.264) == pytest.approx(simulated, abs=0.015)
