"""untapped.study.analysis: the rules of docs/study-plan.md, failed runs, and the analysis against SciPy directly."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from untapped.study import analysis, stats
from untapped.study.analysis import MARGIN, analyse, conclude, pairing, sensitivity


def _conclusion(d):
    d = np.asarray(d, dtype=np.float64)
    primary = stats.paired(d, np.zeros_like(d))
    return conclude(primary, stats.tost(d, MARGIN))


@pytest.mark.parametrize(
    "centre, spread, n, rule",
    [
        (-0.40, 0.05, 35, 1),  # the whole 95% interval below -0.13
        (-0.10, 0.05, 35, 2),  # below 0, not below -0.13; the TOST also rejects: rule 2, as the plan says
        (0.00, 0.10, 35, 3),  # 90% interval inside +-0.13, the t test does not reject
        (0.30, 0.05, 35, 4),  # above 0
        (0.04, 0.26, 10, 5),  # the first ten pairs' situation
    ],
)
def test_each_rule_of_the_plan(centre, spread, n, rule):
    # Differences with exactly this mean and sample sd.
    z = np.linspace(-1, 1, n)
    d = centre + spread * z / z.std(ddof=1)
    got, text = _conclusion(d)
    assert got == rule
    assert text.startswith(analysis.RULES[rule][0].upper() + analysis.RULES[rule][1:] + ":")
    low, high = scipy_stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert f"95% CI {low:+.3f} to {high:+.3f}" in text and f"over {n} pairs" in text
    assert text.count(".") >= 1 and text.endswith(".")


def test_rule_boundaries_follow_the_intervals():
    # The 95% interval's upper end is just above 0 yet the TOST rejects: not rule 2, and the t test
    # does not reject, so rule 3.
    z = np.linspace(-1, 1, 35)
    d = -0.03 + 0.1 * z / z.std(ddof=1)
    rule, _ = _conclusion(d)
    high = scipy_stats.ttest_1samp(d, 0).confidence_interval(0.95).high
    assert high > 0 and rule == 3


def _run(group, seed, ce, acc=0.5, distinct=9):
    return dict(group=group, seed=seed, cross_entropy=ce, accuracy=acc, distinct_digits=distinct)


def test_a_failed_or_missing_partner_leaves_its_pair_out_and_names_it():
    runs = [
        _run(g, s, 1.0 + 0.01 * s + (0.05 if g == "untapped" else 0)) for s in range(1, 6) for g in ("m2", "untapped")
    ]
    runs = [r for r in runs if not (r["group"] == "untapped" and r["seed"] in (2, 4))]
    failed = [dict(run="untapped-seed2", group="untapped", seed=2, status="diverged", message="epoch 3: nan"),
              dict(run="untapped-seed4", group="untapped", seed=4, status="unfinished", message=None)]
    seeds, left_out = pairing(runs, failed)
    assert seeds == [1, 3, 5]
    assert [x["seed"] for x in left_out] == [2, 4]
    assert left_out[0]["failed"] and "untapped-seed2 diverged (epoch 3: nan)" in left_out[0]["reason"]
    assert not left_out[1]["failed"] and left_out[1]["reason"] == "incomplete: untapped-seed4 unfinished"
    # Sensitivity: the diverged run takes untapped's worst cross-entropy.
    sens = sensitivity(runs, failed)
    worst = max(r["cross_entropy"] for r in runs if r["group"] == "untapped")
    assert sens["worst"]["untapped"] == pytest.approx(worst) and sens["seeds"] == [1, 2, 3, 5] and sens["filled"] == [2]
    m2 = {r["seed"]: r["cross_entropy"] for r in runs if r["group"] == "m2"}
    un = {r["seed"]: r["cross_entropy"] for r in runs if r["group"] == "untapped"}
    un[2] = worst
    d = np.array([un[s] - m2[s] for s in (1, 2, 3, 5)])
    assert sens["mean_difference"] == pytest.approx(d.mean())
    assert sens["t_p"] == pytest.approx(scipy_stats.ttest_1samp(d, 0).pvalue)


def test_more_than_three_failed_pairs_give_the_power_left():
    rng = np.random.default_rng(1)
    runs, failed = [], []
    for s in range(12):
        runs.append(_run("m2", s, 1.3 + rng.normal(0, 0.2)))
        if s < 4:
            failed.append(dict(run=f"untapped-seed{s}", group="untapped", seed=s, status="diverged", message="nan"))
        else:
            runs.append(_run("untapped", s, 1.3 + rng.normal(0, 0.2)))
    out = analyse(runs, failed)
    assert out["planned"]["failed_pairs"] == 4 and not out["planned"]["reached"]
    assert out["planned"]["power_at_margin"] == pytest.approx(stats.paired_t_power(8, MARGIN, analysis.PLANNING_SD))
    three = analyse(runs, failed[:3])
    assert three["planned"]["reached"] and three["planned"]["power_at_margin"] is None


def test_analysis_against_scipy():
    rng = np.random.default_rng(2)
    runs = []
    for s in range(20):
        m2 = 1.3 + rng.normal(0, 0.2)
        runs.append(_run("m2", s, m2, rng.uniform(0.5, 0.7), int(rng.integers(8, 11))))
        runs.append(_run("untapped", s, m2 + rng.normal(0.02, 0.25), rng.uniform(0.5, 0.7), int(rng.integers(8, 11))))
    runs.append(_run("untapped/eq17", 0, 1.0))  # a variant does not enter the plan's analysis
    out = analyse(runs)
    by = {g: {r["seed"]: r for r in runs if r["group"] == g} for g in ("m2", "untapped")}
    x = np.array([by["untapped"][s]["cross_entropy"] for s in range(20)])
    y = np.array([by["m2"][s]["cross_entropy"] for s in range(20)])
    t = scipy_stats.ttest_rel(x, y)
    assert out["primary"]["t_p"] == pytest.approx(t.pvalue)
    assert out["differences"] == pytest.approx(list(x - y))
    se = (x - y).std(ddof=1) / math.sqrt(20)
    assert out["equivalence"]["p_lower"] == pytest.approx(scipy_stats.t.sf(((x - y).mean() + MARGIN) / se, 19))
    acc = scipy_stats.ttest_rel([by["untapped"][s]["accuracy"] for s in range(20)],
                                [by["m2"][s]["accuracy"] for s in range(20)])
    sec = out["secondary"]
    assert sec["accuracy"]["p"] == pytest.approx(acc.pvalue)
    ten_u = np.array([by["untapped"][s]["distinct_digits"] == 10 for s in range(20)])
    ten_m = np.array([by["m2"][s]["distinct_digits"] == 10 for s in range(20)])
    b, c = int((ten_u & ~ten_m).sum()), int((~ten_u & ten_m).sum())
    assert sec["ten_distinct"]["p"] == pytest.approx(scipy_stats.binomtest(b, b + c).pvalue if b + c else 1.0)
    assert sec["wilcoxon"]["p"] == pytest.approx(scipy_stats.wilcoxon(x - y).pvalue)
    ps = [sec[k]["p"] for k in ("accuracy", "ten_distinct", "wilcoxon")]
    assert [sec[k]["p_adjusted"] for k in ("accuracy", "ten_distinct", "wilcoxon")] == pytest.approx(
        list(scipy_stats.false_discovery_control(ps)))
    assert out["sensitivity"] is None and out["left_out"] == []
    assert analyse([_run("m2", 1, 1.0), _run("untapped", 1, 1.1)]) is None


def test_by_source_gives_each_sources_pairs_alone():
    # The first study's pairs (recorded) and the new ones (run folders) ran on different machines.
    rng = np.random.default_rng(3)
    runs = []
    for s in range(14):
        source = "study-a/study.json" if s < 6 else "run folder"
        m2 = 1.3 + rng.normal(0, 0.2)
        runs.append(dict(_run("m2", s, m2), source=source))
        runs.append(dict(_run("untapped", s, m2 + rng.normal(0.05, 0.25)), source=source))
    out = analyse(runs)
    groups = out["by_source"]
    assert [g["source"] for g in groups] == ["study-a/study.json", "run folder"]
    assert [g["seeds"] for g in groups] == [list(range(6)), list(range(6, 14))]
    by = {g: {r["seed"]: r["cross_entropy"] for r in runs if r["group"] == g} for g in ("m2", "untapped")}
    for g in groups:
        x = np.array([by["untapped"][s] for s in g["seeds"]])
        y = np.array([by["m2"][s] for s in g["seeds"]])
        t = scipy_stats.ttest_rel(x, y)
        assert g["n"] == len(x) and g["mean_difference"] == pytest.approx((x - y).mean())
        assert g["t_p"] == pytest.approx(t.pvalue)
        assert g["ci"] == pytest.approx(list(t.confidence_interval(0.95)))
    # One source: no such line; the report's table follows the record.
    assert analyse([dict(r, source="run folder") for r in runs])["by_source"] is None
    from untapped.study.markdown import source_lines

    table = source_lines(out)
    assert table[4].startswith("| study-a/study.json | 6 | 0-5 | ")
    assert table[5].startswith("| run folder | 8 | 6-13 | ")
    assert source_lines(dict(out, by_source=None)) == []
