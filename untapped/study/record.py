"""A study's ``study.json``: its runs and their statistics.

Per group (model and variant): mean, sd and 95% t interval of the
cross-entropy and the accuracy, and how many runs show ten distinct digits
(:func:`summarise`); per untapped group, the paired comparison with M2 and
(for a variant) with the code's untapped, over the seeds both have, with
p-values also adjusted over all these comparisons (:func:`comparisons`).
Then the pre-stated analysis of untapped against M2
(:mod:`untapped.study.analysis`), whether each reading of the metric could
give the paper's 2.30 and 2.07 together (:func:`paper_verdict`), and the
study's time (:func:`wall_time`).
"""

import math
import pathlib
import time
from collections import OrderedDict

from untapped.evaluation.readings import READINGS
from untapped.study import analysis, stats
from untapped.study.runs import BASELINE, REFERENCE, TIME_FORMAT, by_seed, groups

#: The paper's cross-entropies on digits 5-9 (mean of 10 trials, §3).
PAPER_CROSS_ENTROPY = OrderedDict(m2=2.30, untapped=2.07)
#: A uniform prediction over ten digits.
UNIFORM_CROSS_ENTROPY = math.log(10)


def summarise(runs):
    """Per group: the cross-entropy and accuracy described, runs with ten distinct digits, every reading."""
    out = OrderedDict()
    for g in groups(runs):
        mine = [r for r in runs if r["group"] == g]
        readings = OrderedDict()
        for name in READINGS:
            values = [r["readings"][name]["cross_entropy"] for r in mine if name in r["readings"]]
            if values:
                readings[name] = stats.describe(values)
        out[g] = OrderedDict(
            cross_entropy=stats.describe([r["cross_entropy"] for r in mine]),
            accuracy=stats.describe([r["accuracy"] for r in mine]),
            ten_distinct=sum(r["distinct_digits"] == 10 for r in mine),
            seeds=[r["seed"] for r in mine],
            readings=readings,
        )
    return out


def comparisons(runs):
    """Paired comparisons, ``(first, second) -> stats``, over the seeds both groups have.

    Every non-M2 group against M2, and every untapped variant against the code's untapped.
    The cross-entropy's p-values are also given adjusted over all these comparisons
    (``t_p_adjusted``, ``wilcoxon_p_adjusted``; Benjamini-Hochberg, :func:`untapped.study.stats.adjust`).
    """
    pairs = [(g, BASELINE) for g in groups(runs) if g != BASELINE]
    pairs += [(g, REFERENCE) for g in groups(runs) if g.startswith(REFERENCE + "/")]
    out = OrderedDict()
    for first, second in pairs:
        a, b = by_seed(runs, first), by_seed(runs, second)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        acc_a, acc_b = by_seed(runs, first, "accuracy"), by_seed(runs, second, "accuracy")
        out[f"{first} vs {second}"] = OrderedDict(
            first=first,
            second=second,
            seeds=seeds,
            cross_entropy=stats.paired([a[s] for s in seeds], [b[s] for s in seeds]),
            accuracy=stats.paired([acc_a[s] for s in seeds], [acc_b[s] for s in seeds]),
        )
    ces = [c["cross_entropy"] for c in out.values()]
    for test in ("t_p", "wilcoxon_p"):
        for ce, q in zip(ces, stats.adjust([ce[test] for ce in ces])):
            ce[test + "_adjusted"] = q
    return out


#: The paper gives its cross-entropies to two decimals: a reading's true value may lie this far from them.
PAPER_ROUNDING = 0.005


def paper_verdict(summary, reading):
    """Could ``reading`` give the paper's M2 2.30 and untapped 2.07 together? None if a model lacks the reading.

    Possible when each model's 95% interval of the reading, widened by the
    paper's rounding (:data:`PAPER_ROUNDING`), holds the paper's value.
    Returns ``possible``, per model ``{mean, ci, paper, holds}``, and the order
    of the two means.
    """
    found = OrderedDict((g, summary.get(g, {}).get("readings", {}).get(reading)) for g in PAPER_CROSS_ENTROPY)
    if any(d is None or d["ci"] is None for d in found.values()):
        return None
    out = OrderedDict(possible=True)
    for group, d in found.items():
        paper = PAPER_CROSS_ENTROPY[group]
        holds = d["ci"][0] - PAPER_ROUNDING <= paper <= d["ci"][1] + PAPER_ROUNDING
        out["possible"] &= holds
        out[group] = OrderedDict(mean=d["mean"], ci=d["ci"], paper=paper, holds=bool(holds))
    m2, untapped = found[BASELINE]["mean"], found[REFERENCE]["mean"]
    if abs(m2 - untapped) < 1e-9:
        out["order"] = "the same for both models"
    else:
        out["order"] = ("untapped lower, as in the paper" if untapped < m2
                        else "untapped higher: the paper's order reversed")
    out["possible"] = bool(out["possible"])
    return out


def wall_time(runs):
    """The study's time: the runs' training seconds summed (per source), and first start to last finish where known."""
    by_source = OrderedDict()
    for r in runs:
        by_source[r["source"]] = by_source.get(r["source"], 0.0) + r["train_seconds"]
    timed = [r for r in runs if r.get("started") and r.get("finished")]
    pairs = sum(r["train_seconds"] for r in runs if r["group"] in (analysis.FIRST, analysis.SECOND))
    out = OrderedDict(train_seconds=float(sum(by_source.values())), train_seconds_by_source=by_source,
                      train_seconds_pairs=float(pairs),
                      timed_runs=len(timed), first_started=None, last_finished=None, span_seconds=None)
    if timed:
        first = min(r["started"] for r in timed)
        last = max(r["finished"] for r in timed)
        out.update(first_started=first, last_finished=last,
                   span_seconds=time.mktime(time.strptime(last, TIME_FORMAT))
                   - time.mktime(time.strptime(first, TIME_FORMAT)))
    return out


def study_record(folder, runs, failed=(), notes=()):
    """The machine-readable study (``study.json``): runs without their histories, the statistics, and ``notes``."""
    commits = sorted({r["commit"] or "unknown" for r in runs})
    summary = summarise(runs)
    return OrderedDict(
        study=str(pathlib.Path(folder).resolve().name),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        commits=commits,
        sources=list(OrderedDict.fromkeys(r["source"] for r in runs)),
        runs=[OrderedDict((k, v) for k, v in r.items() if k != "history") for r in runs],
        not_finished=list(failed),
        summary=summary,
        paired=comparisons(runs),
        analysis=analysis.analyse(runs, failed),
        readings=READINGS,
        readings_derived=sorted({name for r in runs for name in r["readings_derived"]}),
        paper_verdicts=OrderedDict((name, paper_verdict(summary, name)) for name in READINGS),
        paper=PAPER_CROSS_ENTROPY,
        wall_time=wall_time(runs),
        notes=list(notes),
    )
