"""A study's report: its runs, their statistics and figures (``python run_mnist.py report OUT``).

A *study* is a results folder that ``run_mnist.py`` filled with runs (one
``<model>[-<variant>]-seed<seed>/`` folder each). :func:`write_report` reads
every finished run (``metrics.json``, ``config.json``, ``history.json``),
and the runs recorded in earlier reports' ``study.json`` files given with
``--with`` (a run in both is an error), and writes, into ``<OUT>/report/``
by default:

* ``study.json``: every run (model, variant, seed, cross-entropy on 5-9,
  permuted accuracy, the digit each one-hot shows, every metric reading,
  its last-epoch training terms, where it came from, commit and command),
  the run folders without a result (diverged or unfinished), the statistics
  below and the study's wall time;
* ``report.md``: the tables, with the figures linked;
* ``running_mean.png``: the paired mean untapped - M2 and its 95% interval
  against the number of pairs, in seed order;
* ``cross_entropy.png``: the cross-entropy of every run per model and
  variant, with mean and 95% interval and the paper's values marked;
* ``paired.png``: M2 -> untapped (and each variant) seed by seed;
* ``curves.png``: every training term over the epochs, mean and range over
  seeds, per model; ``curves-variants.png`` the same for untapped and its
  variants;
* ``figure2-<group>.png``: Figure 2 (decoder means at z_bar) of every seed.

Folders that are not finished untapped runs (another tool's ``metrics.json``,
a damaged one, an unfinished run) are left out, and runs of different
lengths are compared: the report says so under *Notes*.

Statistics (:mod:`untapped.stats`): per group, mean, sd and 95% t interval
of the cross-entropy and the accuracy, and how many runs show ten distinct
digits; per untapped group, the paired comparison with M2 and (for a
variant) with the code's untapped, over the seeds both have, with p-values
also adjusted over all these comparisons (Benjamini-Hochberg). Then the
pre-stated analysis of untapped against M2 (:mod:`untapped.study_plan`,
``docs/study-plan.md``): primary, equivalence, the one conclusion,
secondaries, failed runs. And whether each reading of the metric could give
the paper's 2.30 and 2.07 together (:func:`paper_verdict`).
"""

import json
import math
import pathlib
import re
import time
from collections import OrderedDict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from untapped import stats, study_plan
from untapped.evaluation import DERIVED, READINGS
from untapped.files import atomic_output, jsonable
from untapped.presets import group_name
from untapped.run_metrics import MetricsProblem, read_metrics

#: The paper's cross-entropies on digits 5-9 (mean of 10 trials, §3).
PAPER_CROSS_ENTROPY = OrderedDict(m2=2.30, untapped=2.07)
#: A uniform prediction over ten digits.
UNIFORM_CROSS_ENTROPY = math.log(10)
BASELINE = "m2"
REFERENCE = "untapped"
#: Training terms in plotting order, as ``history.json`` names them.
CURVE_TERMS = ("labeled_elbo", "unlabeled_elbo", "reverse_elbo", "x_to_y_loss", "y_to_x_loss", "total")
#: Files that mark a folder as an untapped run's, finished or not.
_RUN_MARKS = ("config.json", "checkpoint.h5")


class ReportError(Exception):
    """The folder holds no finished run, or a file cannot be read or written; one-line message."""


# ---------------------------------------------------------------- reading a study


def _read(path, what):
    """The JSON object in ``path`` ({} if there is none); :class:`MetricsProblem` (damaged) if it is not one."""
    try:
        value = json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise MetricsProblem(path.parent / "metrics.json", f"its {what} cannot be read: {' '.join(str(exc).split())}",
                             damaged=True) from None
    if not isinstance(value, dict):
        raise MetricsProblem(path.parent / "metrics.json", f"its {what} is not a JSON object", damaged=True)
    return value


#: A run folder's name: ``<model>[-<variant>]-seed<seed>``.
_RUN_NAME = re.compile(r"^(?P<model>[a-z0-9]+?)(?:-(?P<variant>.+))?-seed(?P<seed>\d+)$")
#: The first line of a run's ``log.txt``: ``untapped <version>: <run>, <YYYY-mm-dd HH:MM:SS>``.
_LOG_START = re.compile(r"^untapped \S+: \S+, (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_TIME = "%Y-%m-%d %H:%M:%S"


def training_terms(history):
    """The last epoch's training terms (:data:`CURVE_TERMS`) from a run's history; None where a term is not trained."""
    return OrderedDict((t, float(history[f"train/{t}"][-1]) if history.get(f"train/{t}") else None) for t in CURVE_TERMS)


def _derive_readings(readings):
    """Add the readings of :data:`untapped.evaluation.DERIVED` that a run's metrics predate, from its default."""
    derived = []
    default = readings.get("default")
    for name, derive in DERIVED.items():
        if name not in readings and default is not None:
            readings[name] = OrderedDict(cross_entropy=derive(default["cross_entropy"]), accuracy=default["accuracy"])
            derived.append(name)
    return derived


def _timestamps(run_dir):
    """When a run started (its log's first line) and finished (its metrics.json written), local time; None if unknown."""
    started = None
    try:
        with open(run_dir / "log.txt") as log:
            match = _LOG_START.match(log.readline())
        started = match.group(1) if match else None
    except OSError:
        pass
    try:
        finished = time.strftime(_TIME, time.localtime((run_dir / "metrics.json").stat().st_mtime))
    except OSError:
        finished = None
    return started, finished


def _series(history, key, path):
    """``history[key]`` as a float array; :class:`MetricsProblem` (damaged) unless it is a list of finite numbers."""
    values = history.get(key, [])
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise MetricsProblem(path, f"history.json's {key} is not a list of finite numbers", damaged=True)
    return np.asarray(values, dtype=float)


def _load_run(path):
    """One finished run from its ``metrics.json`` at ``path``, with its config and history; :class:`MetricsProblem` if unusable."""
    metrics = read_metrics(path)
    config = _read(path.parent / "config.json", "config.json")
    history = _read(path.parent / "history.json", "history.json")
    for key in ("seconds", *(f"train/{t}" for t in CURVE_TERMS)):
        _series(history, key, path)
    variant = metrics.get("variant", "code")
    recognised = [int(d) for d in metrics["recognised"]]
    readings = OrderedDict(
        (k, OrderedDict(cross_entropy=v["cross_entropy"], accuracy=v["accuracy"]))
        for k, v in metrics.get("readings", {}).items()
    )
    derived = _derive_readings(readings)
    started, finished = _timestamps(path.parent)
    return OrderedDict(
        run=path.parent.name,
        model=metrics["model"],
        variant=variant,
        group=group_name(metrics["model"], variant),
        seed=int(metrics["seed"]),
        epochs=int(metrics["epochs"]),
        cross_entropy=float(metrics["cross_entropy"]),
        accuracy=float(metrics["accuracy"]),
        recognised=recognised,
        distinct_digits=len(set(recognised)),
        readings=readings,
        readings_derived=derived,
        commit=metrics.get("commit"),
        command=metrics.get("command") or config.get("command"),
        train_seconds=float(np.sum(history.get("seconds", []))),
        training_terms=training_terms(history),
        started=started,
        finished=finished,
        source="run folder",
        history=history,
    )


def _folder_runs(folder, notes):
    """The finished runs of ``folder``'s run folders; what is left out gets a line in ``notes``."""
    runs = []
    for path in sorted(folder.glob("*/metrics.json")):
        try:
            runs.append(_load_run(path))
        except MetricsProblem as exc:
            notes.append("left out " + " ".join(exc.said(path.relative_to(folder)).split()))
    unfinished = sorted(
        p.name for p in folder.iterdir()
        if p.is_dir() and not (p / "metrics.json").exists() and any((p / n).exists() for n in _RUN_MARKS)
    )
    if unfinished:
        notes.append(f"left out {len(unfinished)} unfinished run(s), without metrics.json: {', '.join(unfinished)}")
    return runs


def load_recorded(path):
    """The runs of an earlier report's ``study.json``, as :func:`load_runs` gives them.

    Their folders are not read: the training terms, curves and timestamps
    are missing (None), and the derived readings are added from the default.
    """
    path = pathlib.Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path} ({' '.join(str(exc).split())})") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise ReportError(f"{path} is not a report's study.json (no runs list)")
    runs = []
    for r in record["runs"]:
        try:
            run = OrderedDict((k, r[k]) for k in ("run", "model", "variant", "group", "seed", "epochs", "cross_entropy",
                                                  "accuracy", "recognised", "distinct_digits"))
        except KeyError as exc:
            raise ReportError(f"{path}: a run without {exc}") from None
        readings = OrderedDict((k, OrderedDict(v)) for k, v in r.get("readings", {}).items())
        derived = sorted(set(_derive_readings(readings)) | set(r.get("readings_derived", [])))
        run.update(
            readings=readings,
            readings_derived=derived,
            commit=r.get("commit"),
            command=r.get("command"),
            train_seconds=float(r.get("train_seconds") or 0.0),
            training_terms=r.get("training_terms") or OrderedDict((t, None) for t in CURVE_TERMS),
            started=r.get("started"),
            finished=r.get("finished"),
            source=f"{path.resolve().parent.name}/{path.name}",
            history={},
        )
        runs.append(run)
    return runs


def load_runs(folder, recorded=(), notes=None):
    """Every finished run in ``folder`` and in the earlier ``study.json`` files ``recorded``, sorted by group and seed.

    A run (group and seed) found twice is an error: each run is reported once.
    Left out, with a line in ``notes`` (a list) each: a ``metrics.json``
    that is not an untapped run's or is damaged
    (:func:`untapped.run_metrics.check_metrics`, and the run's
    ``config.json`` and ``history.json`` must be JSON objects), and the
    run folders without one (unfinished runs).
    """
    folder = pathlib.Path(folder)
    notes = [] if notes is None else notes
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    runs = _folder_runs(folder, notes)
    where = {(r["group"], r["seed"]): str(folder) for r in runs}
    for path in recorded:
        for r in load_recorded(path):
            key = (r["group"], r["seed"])
            if key in where:
                raise ReportError(f"{r['group']} seed {r['seed']} is both in {where[key]} and in {path}; "
                                  "a run is reported once, so leave one of them out")
            where[key] = str(path)
            runs.append(r)
    if not runs:
        raise ReportError(f"{folder} holds no finished run (no <run>/metrics.json)"
                          + (f"; {notes[0]}" if notes else ""))
    order = {g: i for i, g in enumerate([BASELINE, REFERENCE])}
    runs.sort(key=lambda r: (order.get(r["group"], 2), r["group"], r["seed"]))
    return runs


def load_failed(folder):
    """The run folders in ``folder`` without a ``metrics.json``: ``diverged`` (its log says so) or ``unfinished``."""
    out = []
    for run_dir in sorted(p for p in pathlib.Path(folder).iterdir() if p.is_dir() and not (p / "metrics.json").exists()):
        try:
            config = _read(run_dir / "config.json", "config.json")
        except MetricsProblem:
            config = {}
        name = _RUN_NAME.match(run_dir.name)
        if not config and name is None:
            continue  # not a run folder (the report's own, for one)
        model = config.get("model") or name.group("model")
        variant = config.get("variant") or (name.group("variant") if name else None) or "code"
        seed = int(config["seed"]) if "seed" in config else int(name.group("seed"))
        status, message = "unfinished", None
        try:
            diverged = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("diverged:")]
        except OSError:
            diverged = []
        if diverged:
            status, message = "diverged", diverged[-1][len("diverged:"):].strip()
        out.append(OrderedDict(run=run_dir.name, model=model, variant=variant, group=group_name(model, variant),
                               seed=seed, status=status, message=message))
    return out


def groups(runs):
    return list(OrderedDict.fromkeys(r["group"] for r in runs))


def _by_seed(runs, group, key="cross_entropy"):
    return {r["seed"]: r[key] for r in runs if r["group"] == group}


# ---------------------------------------------------------------- statistics


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
    (``t_p_adjusted``, ``wilcoxon_p_adjusted``; Benjamini-Hochberg, :func:`untapped.stats.adjust`).
    """
    pairs = [(g, BASELINE) for g in groups(runs) if g != BASELINE]
    pairs += [(g, REFERENCE) for g in groups(runs) if g.startswith(REFERENCE + "/")]
    out = OrderedDict()
    for first, second in pairs:
        a, b = _by_seed(runs, first), _by_seed(runs, second)
        seeds = sorted(set(a) & set(b))
        if not seeds:
            continue
        acc_a, acc_b = _by_seed(runs, first, "accuracy"), _by_seed(runs, second, "accuracy")
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
        out["order"] = "untapped lower, as in the paper" if untapped < m2 else "untapped higher: the paper's order reversed"
    out["possible"] = bool(out["possible"])
    return out


def wall_time(runs):
    """The study's time: the runs' training seconds summed (per source), and first start to last finish where known."""
    by_source = OrderedDict()
    for r in runs:
        by_source[r["source"]] = by_source.get(r["source"], 0.0) + r["train_seconds"]
    timed = [r for r in runs if r.get("started") and r.get("finished")]
    pairs = sum(r["train_seconds"] for r in runs if r["group"] in (study_plan.FIRST, study_plan.SECOND))
    out = OrderedDict(train_seconds=float(sum(by_source.values())), train_seconds_by_source=by_source,
                      train_seconds_pairs=float(pairs),
                      timed_runs=len(timed), first_started=None, last_finished=None, span_seconds=None)
    if timed:
        first = min(r["started"] for r in timed)
        last = max(r["finished"] for r in timed)
        out.update(first_started=first, last_finished=last,
                   span_seconds=time.mktime(time.strptime(last, _TIME)) - time.mktime(time.strptime(first, _TIME)))
    return out



def length_notes(runs):
    """A line if the runs differ in their epochs (the tables then compare runs trained for different lengths)."""
    if len({r["epochs"] for r in runs}) <= 1:
        return []
    per_group = "; ".join(
        f"{g}: {', '.join(str(e) for e in sorted({r['epochs'] for r in runs if r['group'] == g}))}" for g in groups(runs)
    )
    return [f"the runs differ in length (epochs per group, {per_group}); the summaries and paired comparisons mix them"]


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
        analysis=study_plan.analyse(runs, failed),
        readings=READINGS,
        readings_derived=sorted({name for r in runs for name in r["readings_derived"]}),
        paper_verdicts=OrderedDict((name, paper_verdict(summary, name)) for name in READINGS),
        paper=PAPER_CROSS_ENTROPY,
        wall_time=wall_time(runs),
        notes=list(notes),
    )


# ---------------------------------------------------------------- figures


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    except OSError as exc:
        raise ReportError(f"cannot write {path} ({' '.join(str(exc).split())})") from None
    return path


def plot_cross_entropy(runs, path):
    """Strip plot of every run's cross-entropy per group, mean and 95% interval, the paper's values."""
    names = groups(runs)
    fig = _figure(max(5.0, 1.5 * len(names) + 2.5), 4.5)
    ax = fig.subplots()
    jitter = np.random.default_rng(0)
    paper_labelled = False
    for i, g in enumerate(names):
        values = [r["cross_entropy"] for r in runs if r["group"] == g]
        ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=22, color="C0", alpha=0.75,
                   label="one run (seed)" if i == 0 else None, zorder=3)
        d = stats.describe(values)
        if d["ci"] is not None:
            ax.errorbar(i + 0.3, d["mean"], yerr=[[d["mean"] - d["ci"][0]], [d["ci"][1] - d["mean"]]], fmt="o",
                        color="black", capsize=4, label="mean, 95% CI" if i == 0 else None, zorder=4)
        paper = PAPER_CROSS_ENTROPY.get(g)
        if paper is not None:
            ax.plot([i - 0.3, i + 0.3], [paper, paper], color="C3", lw=2.5,
                    label=None if paper_labelled else "paper (mean of 10 trials)")
            paper_labelled = True
    ax.axhline(UNIFORM_CROSS_ENTROPY, color="grey", ls=":", lw=1, label="uniform guess, ln 10")
    ax.set_xticks(range(len(names)), [n.replace("/", "\n") for n in names])
    ax.set_ylabel("cross-entropy on digits 5-9 (nats)")
    ax.set_title("Cross-entropy of the permuted q(y|x) on digits 5-9, per run\n(lower is better)", fontsize=11)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_paired(runs, path):
    """For each group compared with M2: one line per seed from M2's cross-entropy to the group's."""
    others = [g for g in groups(runs) if g != BASELINE]
    if not others or BASELINE not in groups(runs):
        return None
    fig = _figure(max(5.0, 2.8 * len(others) + 0.8), 4.4)
    axes = np.atleast_1d(fig.subplots(1, len(others), sharey=True, squeeze=False)).ravel()
    base = _by_seed(runs, BASELINE)
    for ax, g in zip(axes, others):
        mine = _by_seed(runs, g)
        seeds = sorted(set(base) & set(mine))
        for s in seeds:
            better = mine[s] < base[s]
            ax.plot([0, 1], [base[s], mine[s]], marker="o", color="C2" if better else "C3", alpha=0.8)
        ax.set_xticks([0, 1], ["M2", g.replace("/", "\n")])
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"{g} vs M2:\n{sum(mine[s] < base[s] for s in seeds)} of {len(seeds)} seeds lower", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("cross-entropy on digits 5-9 (nats)")
    fig.suptitle("Cross-entropy paired by seed\n(green: lower than M2, red: higher)", fontsize=11)
    return _save(fig, path)


def plot_running_mean(analysis, path, recorded_pairs=0):
    """The paired mean difference and its 95% interval against the number of pairs, in seed order.

    Marks 0, the plan's margin +-:data:`untapped.study_plan.MARGIN`, and (when
    some pairs come from an earlier study) where the earlier study's pairs end.
    """
    steps = [s for s in analysis["running_mean"] if s["ci"] is not None]
    if not steps:
        return None
    k = np.array([s["pairs"] for s in steps])
    mean = np.array([s["mean"] for s in steps])
    low, high = np.array([s["ci"][0] for s in steps]), np.array([s["ci"][1] for s in steps])
    margin = analysis["margin"]
    fig = _figure(7.5, 5.2)
    ax = fig.subplots()
    ax.fill_between(k, low, high, color="C0", alpha=0.2, label="95% CI (paired t)")
    ax.plot(k, mean, "o-", color="C0", ms=3.5, lw=1.5, label="mean of untapped - M2 over the first k pairs")
    ax.axhline(0, color="black", lw=1, label="no difference")
    ax.axhline(margin, color="C3", ls="--", lw=1.2, label=f"+-{margin:.2f} nats: the paper's relative effect")
    ax.axhline(-margin, color="C3", ls="--", lw=1.2)
    if 0 < recorded_pairs < k[-1]:
        ax.axvline(recorded_pairs + 0.5, color="grey", ls=":", lw=1.2, label=f"the first study's {recorded_pairs} pairs end")
    ax.set_xlabel("pairs analysed, in seed order (k)")
    ax.set_ylabel("untapped - M2, cross-entropy on 5-9 (nats)")
    ax.set_xlim(k[0] - 0.5, k[-1] + 0.5)
    ax.set_title(f"How the answer sharpened: the paired mean and its 95% CI over {k[-1]} pairs\n"
                 "(below 0: untapped lower, i.e. better)", fontsize=11)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_curves(runs, path, names=None, title="Training terms"):
    """Every training term over the epochs: per group (all, or ``names``) the mean over seeds and the min-max band.

    Only runs read from their folders have a history; None when none of ``names`` has one.
    """
    colour = {g: f"C{i}" for i, g in enumerate(groups(runs))}  # a group keeps its colour in every figure
    names = groups(runs) if names is None else names
    if not any(r["history"] for r in runs if r["group"] in names):
        return None
    fig = _figure(12, 6.5)
    axes = fig.subplots(2, 3).ravel()
    for ax, term in zip(axes, CURVE_TERMS):
        key = f"train/{term}"
        for g in names:
            series = [np.asarray(r["history"][key]) for r in runs if r["group"] == g and key in r["history"]]
            if not series:
                continue
            n = min(len(s) for s in series)
            values = np.stack([s[:n] for s in series])
            epochs = np.arange(1, n + 1)
            ax.plot(epochs, values.mean(axis=0), color=colour[g], lw=1.5, label=f"{g} (n={len(series)})")
            ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=colour[g], alpha=0.2)
        _label_term(ax, term)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=max(1, len(labels)), fontsize=9)
    fig.suptitle(f"{title}, mean over seeds (line) and range (band); the total is the weighted sum minimised")
    return _save(fig, path)


def plot_figure2(runs, group, folder, path):
    """Figure 2 of every seed of ``group``: each run's own ``digits_means.png``, side by side."""
    from matplotlib.image import imread

    mine = [r for r in runs if r["group"] == group and (pathlib.Path(folder) / r["run"] / "digits_means.png").exists()]
    if not mine:
        return None
    ncols = min(len(mine), 2)
    nrows = -(-len(mine) // ncols)
    fig = _figure(6.4 * ncols, 3.6 * nrows + 0.6)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, r in zip(axes, mine):
        ax.imshow(imread(pathlib.Path(folder) / r["run"] / "digits_means.png"))
        ax.set_title(f"seed {r['seed']}: CE {r['cross_entropy']:.3f}, {r['distinct_digits']} distinct digits", fontsize=11)
    fig.suptitle(f"{group}: Figure 2 of every seed\n(decoder means at z_bar; 'y=k → d': the classifier sees digit d)",
                 fontsize=12)
    return _save(fig, path)


#: Each plotted term's paper symbol and unit (``untapped.presets.TERMS``).
_TERM_LABELS = {
    "labeled_elbo": ("-J_f^l, eq. 3", "nats per image"),
    "unlabeled_elbo": ("-J_f^u, eq. 4", "nats per image"),
    "reverse_elbo": ("-J_r^u, eq. 5 / App. B eq. 17", "nats per (y, z) pair"),
    "x_to_y_loss": ("J_f^d, eq. 7", "nats per image"),
    "y_to_x_loss": ("J_r^d, eq. 7 (no gradient)", "L2 distance per image"),
    "total": ("weighted sum, minimised", "nats, weighted by the run's coefficients"),
}


def _label_term(ax, term):
    symbol, unit = _TERM_LABELS[term]
    ax.set_title(f"{term} ({symbol})", fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)


def save_run_curves(history, path, title):
    """A run's own ``curves.png``: every term per epoch, training (line) and evaluation (dots)."""
    terms = [t for t in CURVE_TERMS if f"train/{t}" in history or f"eval/{t}" in history]
    fig = _figure(12, 6.5)
    axes = fig.subplots(2, 3).ravel()
    for ax, term in zip(axes, CURVE_TERMS):
        if term not in terms:
            ax.set_visible(False)
            continue
        # Fixed colours: M2 has no training line for the reverse bound, whose
        # dots would otherwise take the training line's colour.
        if f"train/{term}" in history:
            ax.plot(history["epoch"], history[f"train/{term}"], lw=1.2, color="C0", label="training batches")
        if f"eval/{term}" in history:
            ax.plot(history["eval/epoch"], history[f"eval/{term}"], "o", ms=3, color="C1",
                    label="evaluation sources (labeled terms: digits 5-9)")
        _label_term(ax, term)
        if f"train/{term}" not in history:
            ax.set_title(f"{ax.get_title()}\nnot trained on: evaluated only", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------- report.md


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
    return ", ".join(f"{g} seed{'s' if len(v) > 1 else ''} {', '.join(_seed_ranges(sorted(v)))}" for g, v in seeds.items())


def analysis_lines(record):
    """The plan's analysis (``docs/study-plan.md``): conclusion, primary, equivalence, secondaries, failed runs."""
    a = record.get("analysis")
    if a is None:
        return []
    p, e, seeds = a["primary"], a["equivalence"], a["seeds"]
    lines = ["## The pre-stated analysis (docs/study-plan.md)", "",
             f"**{a['conclusion']['text']}** (rule {a['conclusion']['rule']} of the plan)", "",
             f"Pairs analysed: {len(seeds)} of the {a['planned']['pairs']} planned "
             f"(seeds {', '.join(_seed_ranges(seeds))}); d = CE(untapped) - CE(M2) per seed, negative favours untapped.", ""]
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
                  f"{study_plan.MAX_FAILED_PAIRS}). The {len(seeds)} pairs left have power "
                  f"{a['planned']['power_at_margin']:.2f} to detect {a['margin']:.2f} nats (paired sd "
                  f"{study_plan.PLANNING_SD}, two-sided alpha {a['alpha']}).", ""]
    tost_p = f"{stats.format_p(e['p_lower'])} (vs -{e['margin']:.2f}), {stats.format_p(e['p_upper'])} (vs +{e['margin']:.2f})"
    verdict = "equivalent" if e["equivalent"] else "not shown equivalent"
    lines += ["| analysis | estimate | interval | statistic | p |", "|---|---|---|---|---|",
              f"| primary: paired t of d, two-sided | mean {p['mean_difference']:+.3f} nats (sd {p['sd_difference']:.3f}) | "
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
              f"| Figure 2 shows ten distinct digits, exact McNemar | discordant pairs: untapped only {ten['untapped_only']}, "
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
    return lines


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
             f"Training time summed over {_count(len(record['runs']), 'run')}: {w['train_seconds'] / 3600:.1f} h ({parts}; "
             f"M2 and untapped: {w['train_seconds_pairs'] / 3600:.1f} h; compiling, evaluation and Figure 2 not included)."]
    if w["span_seconds"] is not None:
        lines.append(f"First start to last finish of the {_count(w['timed_runs'], 'run')} with a run folder: "
                     f"{w['first_started']} to {w['last_finished']}, {w['span_seconds'] / 3600:.1f} h.")
    untimed = len(record["runs"]) - w["timed_runs"]
    if untimed:
        lines.append(f"The {_count(untimed, 'run')} taken from an earlier study.json carry no timestamps.")
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
              f"a uniform guess scores ln 10 = {UNIFORM_CROSS_ENTROPY:.3f} (10-way) or ln 5 = {math.log(5):.3f} (5-way).", ""]
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
                  "give untapped's 2.07, a sign of how the paper's M2 figure may have arisen, not a reading to adopt.", ""]
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
              "| group | n | CE 5-9 mean +- sd | 95% CI | accuracy mean +- sd | 95% CI | runs with ten distinct digits | paper |",
              "|---|---|---|---|---|---|---|---|"]
    for g, s in record["summary"].items():
        paper = PAPER_CROSS_ENTROPY.get(g)
        lines.append(f"| {g} | {s['cross_entropy']['n']} | {_mean_sd(s['cross_entropy'])} | {_ci(s['cross_entropy'])} | "
                     f"{_mean_sd(s['accuracy'], 1, 100)}% | {_ci(s['accuracy'], 1, 100)}% | {s['ten_distinct']} of {s['cross_entropy']['n']} | "
                     f"{'' if paper is None else f'{paper:.2f}'} |")
    lines += ["", "## Paired comparisons (same seed: same data split and initial weights)", "",
              "Difference = first - second; a negative cross-entropy difference favours the first.", "",
              f"Adjusted p: Benjamini-Hochberg over the {_count(len(record['paired']), 'comparison')} of this table "
              "(t / Wilcoxon). With five pairs and no ties, the exact Wilcoxon p is at least 2 / 2^5 = 0.0625.", "",
              "| first vs second | pairs | CE difference mean | 95% CI | paired t (p) | Wilcoxon W (p) | adjusted p | d_z | "
              "seeds where first is lower | accuracy difference |",
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
    lines += ["## Commands", ""]
    for command in sorted({r["command"] for r in record["runs"] if r["command"]}):
        lines.append(f"    {command}")
    return "\n".join(lines) + "\n"


def write_report(folder, out=None, recorded=(), note=None):
    """Write ``study.json``, ``report.md`` and the figures for the study in ``folder``; returns the report's path.

    ``recorded``: earlier reports' ``study.json`` files whose runs join the
    folder's (a run in both is an error, :func:`load_runs`). What the report
    leaves out or mixes (:func:`load_runs`, :func:`length_notes`) is listed
    under *Notes* in ``report.md`` and ``study.json``, and each line is
    passed to ``note`` as well.
    """
    folder = pathlib.Path(folder)
    notes = []
    runs = load_runs(folder, recorded, notes)
    failed = load_failed(folder)
    notes += length_notes(runs)
    for line in notes:
        if note is not None:
            note(line)
    out = pathlib.Path(out) if out is not None else folder / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out} ({' '.join(str(exc).split())})") from None
    record = study_record(folder, runs, failed, notes)
    figures = []
    analysis = record["analysis"]
    if analysis is not None:
        earlier = {r["seed"] for r in runs if r["group"] == study_plan.FIRST and r["source"] != "run folder"}
        # The earlier study's pairs are marked when they are the first in seed order.
        lead = next((i for i, s in enumerate(analysis["seeds"]) if s not in earlier), len(analysis["seeds"]))
        first = lead if lead == sum(s in earlier for s in analysis["seeds"]) else 0
        running = plot_running_mean(analysis, out / "running_mean.png", first)
        if running is not None:
            figures.append(("The paired mean and its 95% CI as the pairs accrue", running))
    figures.append(("Cross-entropy on digits 5-9, every run", plot_cross_entropy(runs, out / "cross_entropy.png")))
    paired = plot_paired(runs, out / "paired.png")
    if paired is not None:
        figures.append(("M2 to untapped, seed by seed", paired))
    models = [g for g in groups(runs) if "/" not in g]
    figures.append(("Training terms over the epochs", plot_curves(runs, out / "curves.png", models,
                                                                  "Training terms of the models")))
    variants = [g for g in groups(runs) if g.startswith(REFERENCE + "/")]
    if variants:
        figures.append(("Training terms of the untapped variants",
                        plot_curves(runs, out / "curves-variants.png", ([REFERENCE] if REFERENCE in models else []) + variants,
                                    "Training terms of untapped and its variants")))
    figures = [(title, p) for title, p in figures if p is not None]  # curves need runs read from their folders
    for g in groups(runs):
        grid = plot_figure2(runs, g, folder, out / f"figure2-{g.replace('/', '-')}.png")
        if grid is not None:
            figures.append((f"Figure 2, {g}, every seed", grid))
    figures = [(title, pathlib.Path(p).name) for title, p in figures]
    _write_text(out / "study.json", json.dumps(jsonable(record), indent=2) + "\n")
    _write_text(out / "report.md", markdown(record, figures))
    return out / "report.md"


def _write_text(path, text):
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise ReportError(f"cannot write {path} ({' '.join(str(exc).split())})") from None
