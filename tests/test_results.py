"""The committed study results (docs/results/*/study.json): their statistics recomputed from their runs.

Independent of untapped.study.stats: NumPy for means and standard deviations, the t
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


def test_a_final_study_has_at_least_ten_paired_seeds_from_one_commit():
    assert FINAL, "no finished study (docs/results/<name>/study.json without -partial)"
    study = json.loads(FINAL[-1].read_text())
    assert len(study["commits"]) == 1
    seeds = {g: sorted(r["seed"] for r in study["runs"] if r["group"] == g) for g in ("m2", "untapped")}
    assert len(seeds["m2"]) >= 10 and seeds["m2"] == seeds["untapped"]


def test_the_results_page_quotes_the_final_study():
    """docs/results.md states every group's (model or variant) mean +- sd and every paired difference as the final
    study.json gives them."""
    page = (RESULTS.parent / "results.md").read_text()
    study = json.loads(FINAL[-1].read_text())
    for group, summary in study["summary"].items():
        ce = summary["cross_entropy"]
        assert f"{ce['mean']:.3f} +- {ce['sd']:.3f}" in page, group
    for comparison in study["paired"].values():
        ce = comparison["cross_entropy"]
        assert f"{ce['mean_difference']:+.3f}" in page and f"{ce['ci'][0]:+.3f} to {ce['ci'][1]:+.3f}" in page


def test_the_readme_quotes_the_final_study():
    """The README's table states M2's and untapped's mean +- sd and 95% interval, and their paired difference with its
    interval, as the final study.json gives them."""
    readme = (RESULTS.parents[1] / "README.md").read_text()
    study = json.loads(FINAL[-1].read_text())
    for group in ("m2", "untapped"):
        ce = study["summary"][group]["cross_entropy"]
        assert f"{ce['mean']:.3f} +- {ce['sd']:.3f} | {ce['ci'][0]:.3f} to {ce['ci'][1]:.3f}" in readme, group
    ce = study["paired"]["untapped vs m2"]["cross_entropy"]
    assert f"**{ce['mean_difference']:+.3f}** | **{ce['ci'][0]:+.3f} to {ce['ci'][1]:+.3f}**" in readme


# ---------------------------------------------------------------- the pre-stated analysis (docs/study-plan.md)
#
# Recomputed from each study.json's runs with NumPy, SciPy's t distribution and math.comb. The
# committed studies that carry the analysis are checked, and so is a report made here from the
# final committed study's runs (``run_mnist.py report EMPTY --with study.json``).

MARGIN = 0.13  # docs/study-plan.md


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    from untapped.study.report import write_report

    empty = tmp_path_factory.mktemp("empty")
    out = tmp_path_factory.mktemp("report")
    write_report(empty, out, recorded=[FINAL[-1]])
    return out / "study.json"


ANALYSED = [p for p in STUDIES if "analysis" in json.loads(p.read_text())]


@pytest.fixture(params=ANALYSED + ["regenerated"], ids=lambda p: p if isinstance(p, str) else p.parent.name)
def analysed(request):
    path = request.getfixturevalue("regenerated") if request.param == "regenerated" else request.param
    return json.loads(path.read_text())


def _paired_values(study, key):
    by = {g: {r["seed"]: r[key] for r in study["runs"] if r["group"] == g} for g in ("untapped", "m2")}
    seeds = study["analysis"]["seeds"]
    return np.array([by["untapped"][s] for s in seeds]), np.array([by["m2"][s] for s in seeds])


def _two_sided_binomial(b, n):
    if n == 0:
        return 1.0
    k = min(b, n - b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def test_the_analysed_pairs_are_every_finished_pair_but_the_failed(analysed):
    by = {g: {r["seed"] for r in analysed["runs"] if r["group"] == g} for g in ("untapped", "m2")}
    left_out = {x["seed"] for x in analysed["analysis"]["left_out"]}
    assert analysed["analysis"]["seeds"] == sorted((by["untapped"] & by["m2"]) - left_out)


def test_primary_and_equivalence_recomputed(analysed):
    a = analysed["analysis"]
    x, y = _paired_values(analysed, "cross_entropy")
    d = x - y
    n, mean, sd = len(d), d.mean(), d.std(ddof=1)
    se = sd / math.sqrt(n)
    p = a["primary"]
    assert p["mean_difference"] == pytest.approx(mean) and p["sd_difference"] == pytest.approx(sd)
    assert p["t"] == pytest.approx(mean / se)
    assert p["t_p"] == pytest.approx(2 * stats.t.sf(abs(mean / se), n - 1))
    assert p["ci"] == pytest.approx(_interval(d))
    e = a["equivalence"]
    assert e["margin"] == MARGIN
    assert e["p_lower"] == pytest.approx(stats.t.sf((mean + MARGIN) / se, n - 1))
    assert e["p_upper"] == pytest.approx(stats.t.cdf((mean - MARGIN) / se, n - 1))
    half = stats.t.ppf(0.95, n - 1) * se
    assert e["ci"] == pytest.approx([mean - half, mean + half])
    assert e["equivalent"] == (-MARGIN < mean - half and mean + half < MARGIN)


def test_each_sources_pairs_alone_recomputed(analysed):
    # Pairs read from more than one source (a recorded study.json and run folders) ran on different
    # machines; the record gives the primary for each source's pairs alone (docs/study-plan.md).
    a = analysed["analysis"]
    source = {}
    for r in analysed["runs"]:
        if r["group"] in ("untapped", "m2") and r["seed"] in a["seeds"]:
            source.setdefault(r["seed"], []).append(r["source"])
    sources = sorted({", ".join(dict.fromkeys(v)) for v in source.values()})
    if len(sources) < 2:
        assert a.get("by_source") is None
        return
    assert sorted(g["source"] for g in a["by_source"]) == sources
    x, y = _paired_values(analysed, "cross_entropy")
    d = dict(zip(a["seeds"], x - y))
    for g in a["by_source"]:
        assert g["seeds"] == [s for s in a["seeds"] if ", ".join(dict.fromkeys(source[s])) == g["source"]]
        dg = np.array([d[s] for s in g["seeds"]])
        assert g["mean_difference"] == pytest.approx(dg.mean()) and g["ci"] == pytest.approx(_interval(dg))


def test_the_conclusion_is_the_plans_rule_with_its_figures(analysed):
    a = analysed["analysis"]
    x, y = _paired_values(analysed, "cross_entropy")
    d = x - y
    low, high = _interval(d)
    half = stats.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    equivalent = -MARGIN < d.mean() - half and d.mean() + half < MARGIN
    rejects = low > 0 or high < 0
    if high < -MARGIN:
        rule = 1
    elif high < 0:
        rule = 2
    elif equivalent and not rejects:
        rule = 3
    elif low > 0:
        rule = 4
    else:
        rule = 5
    text = a["conclusion"]["text"]
    assert a["conclusion"]["rule"] == rule
    assert f"untapped - M2 = {d.mean():+.3f} nats" in text and f"95% CI {low:+.3f} to {high:+.3f}" in text
    assert f"over {len(d)} pairs" in text


def test_secondaries_recomputed(analysed):
    sec = analysed["analysis"]["secondary"]
    ax, ay = _paired_values(analysed, "accuracy")
    diff = ax - ay
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert sec["accuracy"]["mean_difference"] == pytest.approx(diff.mean())
    assert sec["accuracy"]["p"] == pytest.approx(2 * stats.t.sf(abs(t), len(diff) - 1))
    assert sec["accuracy"]["ci"] == pytest.approx(_interval(diff))
    dx, dy = _paired_values(analysed, "distinct_digits")
    yes_x, yes_y = dx == 10, dy == 10
    table = [[int((yes_x & yes_y).sum()), int((yes_x & ~yes_y).sum())],
             [int((~yes_x & yes_y).sum()), int((~yes_x & ~yes_y).sum())]]
    assert sec["ten_distinct"]["table"] == table
    assert sec["ten_distinct"]["p"] == pytest.approx(_two_sided_binomial(table[0][1], table[0][1] + table[1][0]))
    x, y = _paired_values(analysed, "cross_entropy")
    assert sec["wilcoxon"]["p"] == pytest.approx(stats.wilcoxon(x - y).pvalue)
    ps = [sec[k]["p"] for k in ("accuracy", "ten_distinct", "wilcoxon")]
    assert [sec[k]["p_adjusted"] for k in ("accuracy", "ten_distinct", "wilcoxon")] == pytest.approx(
        list(_benjamini_hochberg(ps)))


def test_running_mean_recomputed(analysed):
    x, y = _paired_values(analysed, "cross_entropy")
    d = x - y
    steps = analysed["analysis"]["running_mean"]
    assert [s["pairs"] for s in steps] == list(range(1, len(d) + 1))
    for s in steps:
        head = d[: s["pairs"]]
        assert s["mean"] == pytest.approx(head.mean())
        if s["pairs"] > 1:
            assert s["ci"] == pytest.approx(_interval(head))


TERMS = ("labeled_elbo", "unlabeled_elbo", "reverse_elbo", "x_to_y_loss", "y_to_x_loss", "total")


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.parent.name)
def test_each_runs_training_terms_are_the_last_epoch_of_its_committed_history(path):
    study = json.loads(path.read_text())
    for r in study["runs"]:
        if r.get("source") != "run folder":
            continue
        history = path.parent / "runs" / r["run"] / "history.json"
        assert history.exists(), f"{r['run']} was read from its folder, but {history} is not committed"
        last = json.loads(history.read_text())
        for term in TERMS:
            series = last.get(f"train/{term}")
            expected = series[-1] if series else None
            assert r["training_terms"][term] == (None if expected is None else pytest.approx(expected)), r["run"]


def test_training_terms_wall_time_and_readings_recomputed(analysed):
    # A run read from its folder has its terms; one taken from a study.json keeps what that study recorded, which is
    # nothing for the runs whose folders did not survive (docs/study-plan.md).
    final = json.loads(FINAL[-1].read_text())
    recorded = {r["run"]: r.get("training_terms") or dict.fromkeys(TERMS) for r in final["runs"]}
    for r in analysed["runs"]:
        terms = r["training_terms"]
        assert set(terms) == set(TERMS)
        if r["source"] == "run folder":
            assert terms["total"] is not None, r["run"]
        elif r["source"] == f"{FINAL[-1].parent.name}/{FINAL[-1].name}":
            assert terms == recorded[r["run"]], r["run"]
        else:
            assert all(v is None for v in terms.values()), r["run"]
        default = r["readings"]["default"]["cross_entropy"]
        assert default == pytest.approx(r["cross_entropy"])
        assert r["readings"]["bits"]["cross_entropy"] == pytest.approx(default / math.log(2))
        assert r["readings"]["class_mean_terms"]["cross_entropy"] == pytest.approx(default / 10)
        assert r["readings"]["class_averaged_q"]["cross_entropy"] == pytest.approx(math.log(10))
    assert analysed["wall_time"]["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in analysed["runs"]))
    for reading, verdict in analysed["paper_verdicts"].items():
        if verdict is None:
            continue
        holds = []
        for group, paper in (("m2", 2.30), ("untapped", 2.07)):
            values = np.array([r["readings"][reading]["cross_entropy"] for r in analysed["runs"]
                               if r["group"] == group and reading in r["readings"]])
            low, high = _interval(values) if values.std() > 0 else (values.mean(), values.mean())
            holds.append(low - 0.005 <= paper <= high + 0.005)
        assert verdict["possible"] == all(holds), reading
