"""The extended study's analysis, as ``docs/study-plan.md`` states it before the runs.

The outcome is the digits 5-9 cross-entropy (paper §3) of untapped and of
M2 trained with the same seed; ``d_s = CE(untapped, s) - CE(M2, s)``.

* Primary: the two-sided paired t test of mean(d) = 0 with its 95% interval.
* Equivalence: TOST at +-:data:`MARGIN` nats, the paper's relative effect
  (10% of M2's mean over the first ten pairs), with its 90% interval.
* The conclusion: the first of the plan's five rules that holds
  (:func:`conclude`), one sentence with its figures.
* Secondaries, each with its p-value adjusted over the three
  (Benjamini-Hochberg): the permuted accuracy (paired t), "Figure 2 shows
  ten distinct digits" (exact McNemar) and the Wilcoxon signed-rank test of d.
* Failed runs (diverged, or unrecoverable): the pair is left out and named;
  a sensitivity line repeats the primary with the failed run's
  cross-entropy set to the worst its model reached. More than
  :data:`MAX_FAILED_PAIRS` failed pairs: the study did not reach its planned
  size, and the power of the pairs left is given.
* Pairs from more than one source (the first study's recorded runs and the
  new ones ran on different machines; each pair on one): the primary for
  each source's pairs alone, a further sensitivity line (the plan's second
  amendment).
"""

from collections import OrderedDict

import numpy as np

from untapped.study import stats

#: The equivalence margin in nats, fixed by the plan from the first ten pairs (10% of M2's 1.306).
MARGIN = 0.13
#: The planned number of pairs, and the paired sd of the first ten that the plan's power assumes.
PLANNED_PAIRS = 35
PLANNING_SD = 0.264
ALPHA = 0.05
#: More failed pairs than this and the study did not reach its planned size.
MAX_FAILED_PAIRS = 3
#: The two groups compared: d = first - second.
FIRST, SECOND = "untapped", "m2"

#: The plan's rules, in the order they are tried.
RULES = OrderedDict(
    [
        (1, "untapped helps by at least the paper's relative effect"),
        (2, "untapped helps, by less than the paper's relative effect"),
        (3, f"the two are equivalent within +-{MARGIN:.2f} nats"),
        (4, "untapped is worse"),
        (5, "the data cannot tell"),
    ]
)


def _signed(x):
    return f"{x:+.3f}"


def conclude(primary, equivalence):
    """The rule of ``docs/study-plan.md`` that applies, and the one sentence that states it with its figures.

    ``primary`` is :func:`untapped.study.stats.paired` of the cross-entropies (95%
    interval), ``equivalence`` :func:`untapped.study.stats.tost` of their differences.
    Returns ``(rule, sentence)``.
    """
    n, mean = primary["n"], primary["mean_difference"]
    low, high = primary["ci"]
    p = stats.format_p(primary["t_p"])
    head = (f"untapped - M2 = {_signed(mean)} nats on the digits 5-9 cross-entropy over {n} pairs, "
            f"95% CI {_signed(low)} to {_signed(high)}")
    tost_low, tost_high = equivalence["ci"]
    interval = f"the 90% CI {_signed(tost_low)} to {_signed(tost_high)}"
    tost_p = f"TOST p = {stats.format_p(equivalence['p'])}"
    rejects = primary["t_p"] < ALPHA
    if high < -MARGIN:
        rule, why = 1, f"wholly below -{MARGIN:.2f} (paired t p = {p})"
    elif high < 0:
        rule, why = 2, f"below 0 but not below -{MARGIN:.2f} (paired t p = {p}; {interval}, {tost_p})"
    elif equivalence["equivalent"] and not rejects:
        rule, why = 3, f"and {interval} lies inside +-{MARGIN:.2f} ({tost_p}; paired t p = {p})"
    elif low > 0:
        rule, why = 4, f"above 0 (paired t p = {p})"
    else:
        rule, why = 5, (f"which includes 0 (paired t p = {p}), and {interval} is not inside +-{MARGIN:.2f} "
                        f"({tost_p})")
    return rule, f"{RULES[rule][0].upper()}{RULES[rule][1:]}: {head}, {why}."


def _values(runs, group, key):
    return {r["seed"]: r[key] for r in runs if r["group"] == group}


def pairing(runs, failed=()):
    """Which seeds are analysed and which are left out, and why.

    A seed is analysed when both :data:`FIRST` and :data:`SECOND` finished.
    A seed with a failed run (``failed``: dicts with ``group``, ``seed``,
    ``status``, ``run``) is left out as *failed*; a seed with one run finished
    and its partner not finished (or absent) is left out as *incomplete*.
    Returns ``(seeds, left_out)``; ``left_out`` lists ``{seed, reason, runs}``.
    """
    done = {g: set(_values(runs, g, "cross_entropy")) for g in (FIRST, SECOND)}
    bad = {}
    for f in failed:
        if f["group"] in (FIRST, SECOND):
            bad.setdefault(f["seed"], []).append(f)
    seeds = sorted(done[FIRST] & done[SECOND])
    left_out = []
    for seed in sorted((done[FIRST] | done[SECOND] | set(bad)) - set(seeds)):
        mine = bad.get(seed, [])
        if any(f["status"] == "diverged" for f in mine):
            reason = "failed: " + "; ".join(
                f"{f['run']} {f['status']}" + (f" ({f['message']})" if f.get("message") else "")
                for f in mine if f["status"] == "diverged")
        else:
            missing = [g for g in (FIRST, SECOND) if seed not in done[g]]
            reason = "incomplete: " + ", ".join(
                next((f"{f['run']} {f['status']}" for f in mine if f["group"] == g), f"no {g} run") for g in missing)
        left_out.append(OrderedDict(seed=seed, reason=reason, failed=any(f["status"] == "diverged" for f in mine)))
    return seeds, left_out


def sensitivity(runs, failed):
    """The primary analysis with every diverged run's cross-entropy set to the worst (highest) its model reached.

    Over the analysed pairs plus the seeds with a diverged run whose partner
    finished or diverged too (``filled``); None when no run diverged.
    """
    diverged = [f for f in failed if f["status"] == "diverged" and f["group"] in (FIRST, SECOND)]
    if not diverged:
        return None
    ce = {g: dict(_values(runs, g, "cross_entropy")) for g in (FIRST, SECOND)}
    worst = {g: max(ce[g].values()) if ce[g] else None for g in (FIRST, SECOND)}
    for f in diverged:
        if worst[f["group"]] is not None:
            ce[f["group"]][f["seed"]] = worst[f["group"]]
    seeds = sorted(set(ce[FIRST]) & set(ce[SECOND]))
    out = stats.paired([ce[FIRST][s] for s in seeds], [ce[SECOND][s] for s in seeds])
    out["worst"] = worst
    out["seeds"] = seeds
    out["filled"] = sorted({f["seed"] for f in diverged} & set(seeds))  # the pairs the line adds to the primary's
    return out


def _pair_source(runs, seed):
    sources = OrderedDict.fromkeys(r.get("source") for r in runs
                                   if r["seed"] == seed and r["group"] in (FIRST, SECOND))
    return ", ".join(str(s) for s in sources)


def by_source(runs, seeds):
    """The primary analysis of each source's pairs alone; None when all ``seeds`` come from one source.

    A pair's source is its runs' ``source`` (where the report read them: a run
    folder, or a recorded ``study.json``); both runs of a pair normally share
    it. Returns one ordered dict per source, in the order of first
    appearance: ``source``, ``seeds`` and :func:`untapped.study.stats.paired`'s
    figures of ``d = CE(FIRST) - CE(SECOND)`` over those seeds.
    """
    groups = OrderedDict()
    for seed in seeds:
        groups.setdefault(_pair_source(runs, seed), []).append(seed)
    if len(groups) < 2:
        return None
    ce = {g: _values(runs, g, "cross_entropy") for g in (FIRST, SECOND)}
    out = []
    for source, mine in groups.items():
        entry = OrderedDict(source=source, seeds=mine)
        entry.update(stats.paired([ce[FIRST][s] for s in mine], [ce[SECOND][s] for s in mine]))
        out.append(entry)
    return out


def analyse(runs, failed=()):
    """The plan's whole analysis of ``runs`` (the report's run dicts) and ``failed`` runs; None without pairs.

    Returns an ordered dict: ``seeds``, ``left_out``, ``primary``, ``equivalence``,
    ``conclusion`` (``rule``, ``text``), ``secondary`` (``accuracy``,
    ``ten_distinct``, ``wilcoxon``, each with ``p`` and ``p_adjusted``),
    ``sensitivity``, ``by_source`` (:func:`by_source`), ``running_mean`` and ``planned`` (pairs planned, failed
    pairs, and the power at the margin when more than
    :data:`MAX_FAILED_PAIRS` failed).
    """
    seeds, left_out = pairing(runs, failed)
    if len(seeds) < 2:
        return None
    ce = {g: _values(runs, g, "cross_entropy") for g in (FIRST, SECOND)}
    acc = {g: _values(runs, g, "accuracy") for g in (FIRST, SECOND)}
    distinct = {g: _values(runs, g, "distinct_digits") for g in (FIRST, SECOND)}
    x, y = np.array([ce[FIRST][s] for s in seeds]), np.array([ce[SECOND][s] for s in seeds])
    d = x - y
    primary = stats.paired(x, y)
    if primary["t"] is None:
        return None
    equivalence = stats.tost(d, MARGIN, ALPHA)
    rule, text = conclude(primary, equivalence)

    accuracy = stats.paired([acc[FIRST][s] for s in seeds], [acc[SECOND][s] for s in seeds])
    ten = stats.mcnemar_exact([distinct[FIRST][s] == 10 for s in seeds], [distinct[SECOND][s] == 10 for s in seeds])
    secondary = OrderedDict(
        accuracy=OrderedDict(test="paired t", mean_difference=accuracy["mean_difference"], ci=accuracy["ci"],
                             statistic=accuracy["t"], p=accuracy["t_p"]),
        ten_distinct=OrderedDict(test="exact McNemar", table=ten["table"], discordant=ten["discordant"],
                                 untapped_only=ten["x_only"], m2_only=ten["y_only"], p=ten["p"]),
        wilcoxon=OrderedDict(test="Wilcoxon signed-rank", statistic=primary["wilcoxon"], p=primary["wilcoxon_p"]),
    )
    for entry, q in zip(secondary.values(), stats.adjust([s["p"] for s in secondary.values()])):
        entry["p_adjusted"] = q

    failed_pairs = sum(entry["failed"] for entry in left_out)
    planned = OrderedDict(pairs=PLANNED_PAIRS, analysed=len(seeds), failed_pairs=failed_pairs,
                          reached=failed_pairs <= MAX_FAILED_PAIRS, power_at_margin=None)
    if failed_pairs > MAX_FAILED_PAIRS:
        planned["power_at_margin"] = stats.paired_t_power(len(seeds), MARGIN, PLANNING_SD, ALPHA)
    return OrderedDict(
        first=FIRST,
        second=SECOND,
        margin=MARGIN,
        alpha=ALPHA,
        seeds=seeds,
        differences=[float(v) for v in d],
        left_out=left_out,
        primary=primary,
        equivalence=equivalence,
        conclusion=OrderedDict(rule=rule, text=text),
        secondary=secondary,
        sensitivity=sensitivity(runs, failed),
        by_source=by_source(runs, seeds),
        running_mean=stats.running_mean(d),
        planned=planned,
    )
