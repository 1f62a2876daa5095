"""A study's ``report.md``: the tables of its ``study.json`` record, with the figures linked."""

import math
from collections import Counter, OrderedDict

from untapped.study import analysis, stats
from untapped.study.record import PAPER_CROSS_ENTROPY, PAPER_ROUNDING, UNIFORM_CROSS_ENTROPY
from untapped.study.runs import BASELINE, CURVE_TERMS, REFERENCE


def _ci(d, digits=3, scale=1.0):
    if d["ci"] is None:
        return "n/a"
    return f"[{d['ci'][0] * scale:.{digits}f}, {d['ci'][1] * scale:.{digits}f}]"


def _mean_sd(d, digits=3, scale=1.0):
    if d["mean"] is None:
        return "n/a"
    sd = "n/a" if d["sd"] is None else f"{d['sd'] * scale:.{digits}f}"
    return f"{d['mean'] * scale:.{digits}f} +- {sd}"


def _count(n, noun):
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _interval(ci, digits=3):
    return "n/a" if ci is None else f"{ci[0]:+.{digits}f} to {ci[1]:+.{digits}f}"


def _seed_ranges(seeds):
    out, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            out.append(str(start) if start == s else f"{start}-{s}")
            start = None
    return out


def _by_group(items):
    """``(group, seed)`` pairs as ``m2 seeds 5-9, untapped seed 12``."""
    seeds = OrderedDict()
    for group, seed in items:
        seeds.setdefault(group, []).append(seed)
    return ", ".join(f"{g} seed{'s' if len(v) > 1 else ''} {', '.join(_seed_ranges(sorted(v)))}"
                     for g, v in seeds.items())


def analysis_lines(record):
    """The plan's analysis (``docs/study-plan.md``): conclusion, primary, equivalence, secondaries, failed runs."""
    a = record.get("analysis")
    if a is None:
        return []
    p, e, seeds = a["primary"], a["equivalence"], a["seeds"]
    lines = ["## The pre-stated analysis (docs/study-plan.md)", "",
             f"**{a['conclusion']['text']}** (rule {a['conclusion']['rule']} of the plan)", "",
             f"Pairs analysed: {len(seeds)} of the {a['planned']['pairs']} planned "
             f"(seeds {', '.join(_seed_ranges(seeds))}); "
             "d = CE(untapped) - CE(M2) per seed, negative favours untapped.", ""]
    failed = [x for x in a["left_out"] if x["failed"]]
    incomplete = [x["seed"] for x in a["left_out"] if not x["failed"]]
    if failed:
        lines += [f"Pairs left out because a run failed ({len(failed)}):", ""]
        lines += [f"- seed {x['seed']}: {x['reason']}" for x in failed] + [""]
    if incomplete:
        lines += [f"Pairs left out because a run has not finished ({len(incomplete)}): seeds "
                  f"{', '.join(_seed_ranges(incomplete))}. A run that cannot be completed by rerunning its command "
                  "counts as failed (docs/study-plan.md).", ""]
    if not a["planned"]["reached"]:
        lines += [f"The study did not reach its planned size: {a['planned']['failed_pairs']} pairs failed (more than "
                  f"{analysis.MAX_FAILED_PAIRS}). The {len(seeds)} pairs left have power "
                  f"{a['planned']['power_at_margin']:.2f} to detect {a['margin']:.2f} nats (paired sd "
                  f"{analysis.PLANNING_SD}, two-sided alpha {a['alpha']}).", ""]
    tost_p = (f"{stats.format_p(e['p_lower'])} (vs -{e['margin']:.2f}), "
              f"{stats.format_p(e['p_upper'])} (vs +{e['margin']:.2f})")
    verdict = "equivalent" if e["equivalent"] else "not shown equivalent"
    lines += ["| analysis | estimate | interval | statistic | p |", "|---|---|---|---|---|",
              f"| primary: paired t of d, two-sided | mean {p['mean_difference']:+.3f} nats "
              f"(sd {p['sd_difference']:.3f}) | "
              f"95% CI {_interval(p['ci'])} | t({p['n'] - 1}) = {p['t']:.2f} | {stats.format_p(p['t_p'])} |",
              f"| equivalence: TOST at +-{e['margin']:.2f} nats | mean {e['mean_difference']:+.3f} nats | "
              f"90% CI {_interval(e['ci'])} | t = {e['t_lower']:.2f} (vs -{e['margin']:.2f}), {e['t_upper']:.2f} "
              f"(vs +{e['margin']:.2f}) | {tost_p}; TOST p = {stats.format_p(e['p'])}, {verdict} |", ""]
    sec = a["secondary"]
    acc, ten, w = sec["accuracy"], sec["ten_distinct"], sec["wilcoxon"]
    acc_ci = None if acc["ci"] is None else [100 * c for c in acc["ci"]]
    acc_t = "n/a" if acc["statistic"] is None else f"t({p['n'] - 1}) = {acc['statistic']:.2f}"
    w_stat = "n/a" if w["statistic"] is None else f"W = {w['statistic']:.0f}"
    table = ten["table"]
    lines += ["Secondary analyses: they describe and do not change the conclusion. Adjusted p: Benjamini-Hochberg "
              "over these three.", "",
              "| secondary | estimate | statistic | p | adjusted p |", "|---|---|---|---|---|",
              f"| permuted accuracy on 5-9, paired t (untapped - M2) | {100 * acc['mean_difference']:+.1f} points, "
              f"95% CI {_interval(acc_ci, 1)} points | {acc_t} | {stats.format_p(acc['p'])} | "
              f"{stats.format_p(acc['p_adjusted'])} |",
              "| Figure 2 shows ten distinct digits, exact McNemar | "
              f"discordant pairs: untapped only {ten['untapped_only']}, "
              f"M2 only {ten['m2_only']} | binomial test of {ten['untapped_only']} of {ten['discordant']} at 1/2 | "
              f"{stats.format_p(ten['p'])} | {stats.format_p(ten['p_adjusted'])} |",
              f"| Wilcoxon signed-rank of d, two-sided | a check of the primary without assuming normal d | {w_stat} | "
              f"{stats.format_p(w['p'])} | {stats.format_p(w['p_adjusted'])} |", "",
              "Figure 2 shows ten distinct digits, seeds counted by both runs:", "",
              "| | M2: yes | M2: no |", "|---|---|---|",
              f"| untapped: yes | {table[0][0]} | {table[0][1]} |",
              f"| untapped: no | {table[1][0]} | {table[1][1]} |", ""]
    sens = a["sensitivity"]
    if sens is None:
        lines += ["Sensitivity: no run diverged, so there is no failed run to set to its model's worst value.", ""]
    elif not sens["filled"]:
        lines += ["Sensitivity: no diverged run has a partner with a result yet, so setting it to its model's worst "
                  "value adds no pair and the primary analysis stands as it is.", ""]
    else:
        lines += [f"Sensitivity: with each diverged run's cross-entropy set to the worst its model reached "
                  f"(M2 {sens['worst']['m2']:.3f}, untapped {sens['worst']['untapped']:.3f}), {sens['n']} pairs "
                  f"(seeds {', '.join(_seed_ranges(sens['filled']))} added): "
                  f"mean {sens['mean_difference']:+.3f}, 95% CI {_interval(sens['ci'])}, paired t p = "
                  f"{stats.format_p(sens['t_p'])}.", ""]
    return lines + source_lines(a)


def source_lines(a):
    """The primary for each source's pairs alone, when the pairs come from more than one (study-plan, 2nd amendment)."""
    groups = a.get("by_source")
    if not groups:
        return []
    lines = ["Sensitivity, by source: the pairs read from different sources ran on different machines (both runs "
             "of a pair on one), and a 150-epoch run's last bits depend on the machine (docs/study-plan.md, "
             "second amendment). The primary for each source's pairs alone:", "",
             "| source | pairs | seeds | mean d, nats | 95% CI | paired t p |", "|---|---|---|---|---|---|"]
    for g in groups:
        p = "n/a" if g["t_p"] is None else stats.format_p(g["t_p"])
        lines.append(f"| {g['source']} | {g['n']} | {', '.join(_seed_ranges(g['seeds']))} | "
                     f"{g['mean_difference']:+.3f} | {_interval(g['ci'])} | {p} |")
    return lines + [""]


def per_seed_lines(record):
    """One row per analysed seed: both runs' cross-entropy, accuracy and distinct digits, and d."""
    a = record.get("analysis")
    if a is None:
        return []
    runs = {(r["group"], r["seed"]): r for r in record["runs"]}
    lines = ["## Per seed", "",
             "| seed | M2 CE | untapped CE | d = untapped - M2 | M2 accuracy | untapped accuracy | M2 distinct | "
             "untapped distinct | from |", "|---|---|---|---|---|---|---|---|---|"]
    for seed, d in zip(a["seeds"], a["differences"]):
        m, u = runs[(a["second"], seed)], runs[(a["first"], seed)]
        source = m["source"] if m["source"] == u["source"] else f"{m['source']}, {u['source']}"
        lines.append(f"| {seed} | {m['cross_entropy']:.3f} | {u['cross_entropy']:.3f} | {d:+.3f} | "
                     f"{100 * m['accuracy']:.1f}% | {100 * u['accuracy']:.1f}% | {m['distinct_digits']} | "
                     f"{u['distinct_digits']} | {source} |")
    return lines + [""]


def terms_lines(record):
    """Every run's last-epoch training terms, or that they are missing."""
    lines = ["## Last-epoch training terms", "",
             "From each run's `history.json`: the last epoch's training terms (mean over its batches); empty where "
             "the model does not train the term (M2 has no reverse bound).", "",
             "| run | epoch | " + " | ".join(CURVE_TERMS) + " |", "|---|---|" + "---|" * len(CURVE_TERMS)]
    missing = [(r["group"], r["seed"]) for r in record["runs"] if all(v is None for v in r["training_terms"].values())]
    rows = [r for r in record["runs"] if not all(v is None for v in r["training_terms"].values())]
    for r in rows:
        terms = r["training_terms"]
        cells = " | ".join("" if terms[t] is None else f"{terms[t]:.4f}" for t in CURVE_TERMS)
        lines.append(f"| {r['run']} | {r['epochs']} | {cells} |")
    if not rows:
        lines = lines[:-2] + ["No run with its folder yet."]
    if missing:
        earlier = ", ".join(s for s in record["sources"] if s != "run folder") or "an earlier study"
        lines += ["", f"Missing (null in study.json) for the {_count(len(missing), 'run')} taken from {earlier} "
                  f"({_by_group(missing)}): their run folders, with their history.json, did not survive, and that "
                  "study.json kept their metrics but not their training terms."]
    return lines + [""]


def wall_lines(record):
    """The study's time: training seconds summed, and first start to last finish where the runs say."""
    w = record["wall_time"]
    parts = "; ".join(f"{src}: {sec / 3600:.1f} h" for src, sec in w["train_seconds_by_source"].items())
    lines = ["## Wall time", "",
             f"Training time summed over {_count(len(record['runs']), 'run')}: "
             f"{w['train_seconds'] / 3600:.1f} h ({parts}; "
             f"M2 and untapped: {w['train_seconds_pairs'] / 3600:.1f} h; "
             "compiling, evaluation and Figure 2 not included)."]
    if w["span_seconds"] is not None:
        lines.append(f"First start to last finish of the {_count(w['timed_runs'], 'run')} with a run folder: "
                     f"{w['first_started']} to {w['last_finished']}, {w['span_seconds'] / 3600:.1f} h.")
    recorded = sum(r["source"] != "run folder" for r in record["runs"])
    if recorded:
        lines.append(f"The {_count(recorded, 'run')} taken from an earlier study.json carry no timestamps.")
    untimed = len(record["runs"]) - recorded - w["timed_runs"]
    if untimed:
        lines.append(f"{_count(untimed, 'run')} read from their folders carry no timestamps (no log.txt).")
    return lines + [""] + processor_lines(record)


def processor_lines(record):
    """The processors the runs ran on, as their ``machine.txt`` names them, and how many ran where it is not named."""
    named = Counter(r["processor"] for r in record["runs"])
    unnamed = named.pop(None, 0)
    if not named:
        return []
    lines = ["Processors, as each run folder's `machine.txt` names them: "
             + "; ".join(f"{_count(n, 'run')} on {p}" for p, n in named.most_common()) + "."]
    if unnamed:
        lines.append(f"Not named for {_count(unnamed, 'run')}.")
    return lines + [""]


def readings_lines(record):
    """The metric under every reading, per group, and whether each reading could give the paper's pair."""
    names = list(record["summary"])
    lines = ["## The metric under each reading of the paper (cross-entropy, mean +- sd)", "",
             "| reading | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for reading, description in record["readings"].items():
        cells = [_mean_sd(record["summary"][g]["readings"][reading]) if reading in record["summary"][g]["readings"]
                 else "n/a" for g in names]
        lines.append(f"| `{reading}`: {description.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    lines += ["", f"Paper: M2 {PAPER_CROSS_ENTROPY['m2']:.2f}, untapped {PAPER_CROSS_ENTROPY['untapped']:.2f}; "
              f"a uniform guess scores ln 10 = {UNIFORM_CROSS_ENTROPY:.3f} (10-way) "
              f"or ln 5 = {math.log(5):.3f} (5-way).", ""]
    if record.get("readings_derived"):
        lines += ["Derived from each run's stored default cross-entropy, for runs whose `metrics.json` predates them: "
                  + ", ".join(f"`{n}`" for n in record["readings_derived"]) + ".", ""]
    verdicts = [(name, v) for name, v in record.get("paper_verdicts", {}).items() if v is not None]
    if verdicts:
        lines += ["### Could a reading give the paper's M2 2.30 and untapped 2.07 together?", "",
                  "Yes when each model's 95% interval of the reading, widened by the paper's rounding "
                  f"(+-{PAPER_ROUNDING}), holds the paper's value.", "",
                  "| reading | M2: mean [95% CI] | untapped: mean [95% CI] | order | both? |", "|---|---|---|---|---|"]
        def cell(d):
            spread = "" if d["ci"][0] == d["ci"][1] else f" [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"
            return f"{d['mean']:.3f}{spread}: {'holds' if d['holds'] else 'excludes'} {d['paper']:.2f}"

        for name, v in verdicts:
            lines.append(f"| `{name}` | {cell(v[BASELINE])} | {cell(v[REFERENCE])} | {v['order']} | "
                         f"{'yes' if v['possible'] else 'no'} |")
        lines += ["", "`class_averaged_q` is ln 10 = 2.303 for any model: it equals M2's 2.30 in the paper and cannot "
                  "give untapped's 2.07, a sign of how the paper's M2 figure may have arisen, "
                  "not a reading to adopt.", ""]
    return lines


def markdown(record, figures):
    """The report's text: per-run table, summary, paired statistics, readings, figures."""
    lines = [f"# Study `{record['study']}`", ""]
    lines += [f"Generated {record['generated']}, from {len(record['runs'])} finished runs; "
              f"commit(s): {', '.join('`' + c[:12] + '`' for c in record['commits'])}; "
              f"runs from: {', '.join(record['sources'])}.", ""]
    diverged = [f for f in record.get("not_finished", []) if f["status"] == "diverged"]
    if diverged:
        lines += ["Diverged runs (no result): " + "; ".join(f"{f['run']} ({f['message']})" for f in diverged) + ".", ""]
    if record.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in record["notes"]] + [""]
    lines += analysis_lines(record) + per_seed_lines(record)
    lines += ["## Runs", "", "| group | seed | CE 5-9 | accuracy | digit shown by y = 0..9 | distinct | training s |",
              "|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        digits = " ".join(map(str, r["recognised"][:5])) + " \\| " + " ".join(map(str, r["recognised"][5:]))
        lines.append(f"| {r['group']} | {r['seed']} | {r['cross_entropy']:.3f} | {100 * r['accuracy']:.1f}% | "
                     f"{digits} | {r['distinct_digits']} | {r['train_seconds']:.0f} |")
    lines += ["", "## Summary per model and variant", "",
              "| group | n | CE 5-9 mean +- sd | 95% CI | accuracy mean +- sd | 95% CI | "
              "runs with ten distinct digits | paper |",
              "|---|---|---|---|---|---|---|---|"]
    for g, s in record["summary"].items():
        paper = PAPER_CROSS_ENTROPY.get(g)
        lines.append(f"| {g} | {s['cross_entropy']['n']} | {_mean_sd(s['cross_entropy'])} | "
                     f"{_ci(s['cross_entropy'])} | "
                     f"{_mean_sd(s['accuracy'], 1, 100)}% | {_ci(s['accuracy'], 1, 100)}% | "
                     f"{s['ten_distinct']} of {s['cross_entropy']['n']} | "
                     f"{'' if paper is None else f'{paper:.2f}'} |")
    lines += ["", "## Paired comparisons (same seed: same data split and initial weights)", "",
              "Difference = first - second; a negative cross-entropy difference favours the first.", "",
              f"Adjusted p: Benjamini-Hochberg over the {_count(len(record['paired']), 'comparison')} of this table "
              "(t / Wilcoxon). With five pairs and no ties, the exact Wilcoxon p is at least 2 / 2^5 = 0.0625.", "",
              "| first vs second | pairs | CE difference mean | 95% CI | paired t (p) | Wilcoxon W (p) | "
              "adjusted p | d_z | seeds where first is lower | accuracy difference |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in record["paired"].items():
        ce, acc = c["cross_entropy"], c["accuracy"]
        t = "n/a" if ce["t"] is None else f"{ce['t']:.2f} ({stats.format_p(ce['t_p'])})"
        w = "n/a" if ce["wilcoxon"] is None else f"{ce['wilcoxon']:.0f} ({stats.format_p(ce['wilcoxon_p'])})"
        adjusted = f"{stats.format_p(ce.get('t_p_adjusted'))} / {stats.format_p(ce.get('wilcoxon_p_adjusted'))}"
        dz = "n/a" if ce["d_z"] is None else f"{ce['d_z']:.2f}"
        ci = "n/a" if ce["ci"] is None else f"[{ce['ci'][0]:.3f}, {ce['ci'][1]:.3f}]"
        accd = "n/a" if acc["mean_difference"] is None else f"{100 * acc['mean_difference']:+.1f} points"
        lines.append(f"| {name} | {ce['n']} | {ce['mean_difference']:+.3f} | {ci} | {t} | {w} | {adjusted} | {dz} | "
                     f"{ce['x_better']} of {ce['n']} | {accd} |")
    lines += [""] + readings_lines(record) + terms_lines(record) + wall_lines(record)
    lines += ["## Figures", ""]
    recorded = [src for src in record["sources"] if src != "run folder"]
    if recorded:
        lines += ["The training curves and the Figure 2 grids need the run folders: they show only the runs read from "
                  f"their folders; the figures of the runs taken from {', '.join(recorded)} are in that report's "
                  "folder.", ""]
    for title, name in figures:
        lines.append(f"![{title}]({name})")
        lines.append("")
    lines += ["## Commands", "", "`--data-dir` and `--out` are shown as `MNIST_DIR` and `STUDY_DIR`, since where they "
              "pointed depends on the machine; `study.json` keeps each run's command as recorded.", ""]
    for command in sorted({portable_command(r["command"]) for r in record["runs"] if r["command"]}):
        lines.append(f"    {command}")
    return "\n".join(lines) + "\n"


#: The options whose values are places on the machine a run was made on, and what the report shows instead.
MACHINE_OPTIONS = {"--data-dir": "MNIST_DIR", "--out": "STUDY_DIR"}


def portable_command(command):
    """``command`` with the values of :data:`MACHINE_OPTIONS` replaced by their placeholders.

    Read as ``untapped.cli`` records it: the words joined by single spaces, unquoted.
    """
    words = command.split(" ")
    for i, word in enumerate(words):
        option, equals, _ = word.partition("=")
        if option in MACHINE_OPTIONS and equals:
            words[i] = f"{option}={MACHINE_OPTIONS[option]}"
        elif i > 0 and words[i - 1] in MACHINE_OPTIONS:
            words[i] = MACHINE_OPTIONS[words[i - 1]]
    return " ".join(words)
