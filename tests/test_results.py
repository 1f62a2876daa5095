"""The committed study results (docs/results/*/study.json): their statistics recomputed from their runs.

Independent of untapped.stats: NumPy for means and standard deviations, the t
quantile for the intervals, SciPy's tests called directly.
"""

import json
import math
import pathlib

import numpy as np
import pytest
from scipy import stats

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "results"
STUDIES = sorted(RESULTS.glob("*/study.json"))


def test_there_are_committed_results():
    assert STUDIES, f"no study.json under {RESULTS}"


@pytest.fixture(params=STUDIES, ids=lambda p: p.parent.name)
def study(request):
    return json.loads(request.param.read_text())


def _interval(values):
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    return [np.mean(values) - half, np.mean(values) + half]


def test_summary_is_what_the_runs_give(study):
    for group, summary in study["summary"].items():
        runs = [r for r in study["runs"] if r["group"] == group]
        ce = [r["cross_entropy"] for r in runs]
        assert summary["cross_entropy"]["n"] == len(runs)
        assert summary["cross_entropy"]["mean"] == pytest.approx(np.mean(ce))
        if len(runs) > 1:
            assert summary["cross_entropy"]["sd"] == pytest.approx(np.std(ce, ddof=1))
            assert summary["cross_entropy"]["ci"] == pytest.approx(_interval(ce))
            accuracy = [r["accuracy"] for r in runs]
            assert summary["accuracy"]["mean"] == pytest.approx(np.mean(accuracy))
            assert summary["accuracy"]["ci"] == pytest.approx(_interval(accuracy))
        assert summary["ten_distinct"] == sum(len(set(r["recognised"])) == 10 for r in runs)


def test_paired_statistics_are_what_the_runs_give(study):
    for comparison in study["paired"].values():
        first = {r["seed"]: r["cross_entropy"] for r in study["runs"] if r["group"] == comparison["first"]}
        second = {r["seed"]: r["cross_entropy"] for r in study["runs"] if r["group"] == comparison["second"]}
        seeds = sorted(set(first) & set(second))
        assert comparison["seeds"] == seeds
        a, b = np.array([first[s] for s in seeds]), np.array([second[s] for s in seeds])
        ce = comparison["cross_entropy"]
        assert ce["mean_difference"] == pytest.approx(np.mean(a - b))
        if len(seeds) > 1 and np.std(a - b) > 0:
            t = stats.ttest_rel(a, b)
            assert ce["t"] == pytest.approx(t.statistic) and ce["t_p"] == pytest.approx(t.pvalue)
            assert ce["ci"] == pytest.approx(_interval(a - b))
            assert ce["d_z"] == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))
            w = stats.wilcoxon(a - b)
            assert ce["wilcoxon_p"] == pytest.approx(w.pvalue)


def _benjamini_hochberg(p):
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    scaled = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def test_adjusted_p_values_are_benjamini_hochberg_over_the_comparisons(study):
    for test in ("t_p", "wilcoxon_p"):
        ces = [c["cross_entropy"] for c in study["paired"].values() if c["cross_entropy"][test] is not None]
        expected = _benjamini_hochberg([ce[test] for ce in ces])
        assert [ce[test + "_adjusted"] for ce in ces] == pytest.approx(list(expected))


FINAL = [p for p in STUDIES if not p.parent.name.endswith("-partial")]


def test_a_final_study_has_ten_paired_seeds_from_one_commit():
    assert FINAL, "no finished study (docs/results/<name>/study.json without -partial)"
    study = json.loads(FINAL[-1].read_text())
    assert len(study["commits"]) == 1
    seeds = {g: sorted(r["seed"] for r in study["runs"] if r["group"] == g) for g in ("m2", "untapped")}
    assert len(seeds["m2"]) == 10 and seeds["m2"] == seeds["untapped"]


def test_the_results_page_quotes_the_final_study():
    """docs/results.md states every group's (model or variant) mean +- sd and every paired difference as the final study.json gives them."""
    page = (RESULTS.parent / "results.md").read_text()
    study = json.loads(FINAL[-1].read_text())
    for group, summary in study["summary"].items():
        ce = summary["cross_entropy"]
        assert f"{ce['mean']:.3f} +- {ce['sd']:.3f}" in page, group
    for comparison in study["paired"].values():
        ce = comparison["cross_entropy"]
        assert f"{ce['mean_difference']:+.3f}" in page and f"{ce['ci'][0]:+.3f} to {ce['ci'][1]:+.3f}" in page


def test_the_readme_quotes_the_final_study():
    """The README's table states M2's and untapped's mean +- sd and 95% interval, and their paired difference with its interval, as the final study.json gives them."""
    readme = (RESULTS.parents[1] / "README.md").read_text()
    study = json.loads(FINAL[-1].read_text())
    for group in ("m2", "untapped"):
        ce = study["summary"][group]["cross_entropy"]
        assert f"{ce['mean']:.3f} +- {ce['sd']:.3f} | {ce['ci'][0]:.3f} to {ce['ci'][1]:.3f}" in readme, group
    ce = study["paired"]["untapped vs m2"]["cross_entropy"]
    assert f"**{ce['mean_difference']:+.3f}** | **{ce['ci'][0]:+.3f} to {ce['ci'][1]:+.3f}**" in readme
