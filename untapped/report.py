"""A study's report: its runs, their statistics and figures (``python run_mnist.py report OUT``).

A *study* is a results folder that ``run_mnist.py`` filled with runs (one
``<model>[-<variant>]-seed<seed>/`` folder each). :func:`write_report` reads
every finished run (``metrics.json``, ``config.json``, ``history.json``) and
writes, into ``<OUT>/report/`` by default:

* ``study.json``: every run (model, variant, seed, cross-entropy on 5-9,
  permuted accuracy, the digit each one-hot shows, every metric reading,
  commit and command) and the statistics below;
* ``report.md``: the tables, with the figures linked;
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
also adjusted over all these comparisons (Benjamini-Hochberg).
"""

import json
import math
import pathlib
import time
from collections import OrderedDict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from untapped import stats
from untapped.evaluation import READINGS
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
        readings=OrderedDict(
            (k, OrderedDict(cross_entropy=v["cross_entropy"], accuracy=v["accuracy"]))
            for k, v in metrics.get("readings", {}).items()
        ),
        commit=metrics.get("commit"),
        command=metrics.get("command") or config.get("command"),
        train_seconds=float(np.sum(history.get("seconds", []))),
        history=history,
    )


def load_runs(folder, notes=None):
    """Every finished run in ``folder``: a list of dicts, sorted by group and seed.

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
    if not runs:
        raise ReportError(f"{folder} holds no finished run (no <run>/metrics.json)"
                          + (f"; {notes[0]}" if notes else ""))
    order = {g: i for i, g in enumerate([BASELINE, REFERENCE])}
    runs.sort(key=lambda r: (order.get(r["group"], 2), r["group"], r["seed"]))
    return runs


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


def length_notes(runs):
    """A line if the runs differ in their epochs (the tables then compare runs trained for different lengths)."""
    if len({r["epochs"] for r in runs}) <= 1:
        return []
    per_group = "; ".join(
        f"{g}: {', '.join(str(e) for e in sorted({r['epochs'] for r in runs if r['group'] == g}))}" for g in groups(runs)
    )
    return [f"the runs differ in length (epochs per group, {per_group}); the summaries and paired comparisons mix them"]


def study_record(folder, runs, notes=()):
    """The machine-readable study (``study.json``): runs without their histories, the statistics, and ``notes``."""
    commits = sorted({r["commit"] or "unknown" for r in runs})
    return OrderedDict(
        study=str(pathlib.Path(folder).resolve().name),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        commits=commits,
        runs=[OrderedDict((k, v) for k, v in r.items() if k != "history") for r in runs],
        summary=summarise(runs),
        paired=comparisons(runs),
        readings=READINGS,
        paper=PAPER_CROSS_ENTROPY,
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


def plot_curves(runs, path, names=None, title="Training terms"):
    """Every training term over the epochs: per group (all, or ``names``) the mean over seeds and the min-max band."""
    colour = {g: f"C{i}" for i, g in enumerate(groups(runs))}  # a group keeps its colour in every figure
    names = groups(runs) if names is None else names
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


def markdown(record, figures):
    """The report's text: per-run table, summary, paired statistics, readings, figures."""
    lines = [f"# Study `{record['study']}`", ""]
    lines += [f"Generated {record['generated']}, from {len(record['runs'])} finished runs; "
              f"commit(s): {', '.join('`' + c[:12] + '`' for c in record['commits'])}.", ""]
    if record.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in record["notes"]] + [""]
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
    lines += ["", "## The metric under each reading of the paper (cross-entropy, mean +- sd)", ""]
    names = list(record["summary"])
    lines += ["| reading | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for reading, description in record["readings"].items():
        cells = [_mean_sd(record["summary"][g]["readings"][reading]) if reading in record["summary"][g]["readings"]
                 else "n/a" for g in names]
        lines.append(f"| `{reading}`: {description.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    lines += ["", f"Paper: M2 {PAPER_CROSS_ENTROPY['m2']}, untapped {PAPER_CROSS_ENTROPY['untapped']}; "
              f"a uniform guess scores ln 10 = {UNIFORM_CROSS_ENTROPY:.3f} (10-way) or ln 5 = {math.log(5):.3f} (5-way).", ""]
    lines += ["## Figures", ""]
    for title, name in figures:
        lines.append(f"![{title}]({name})")
        lines.append("")
    lines += ["## Commands", ""]
    for command in sorted({r["command"] for r in record["runs"] if r["command"]}):
        lines.append(f"    {command}")
    return "\n".join(lines) + "\n"


def write_report(folder, out=None, note=None):
    """Write ``study.json``, ``report.md`` and the figures for the study in ``folder``; returns the report's path.

    What the report leaves out or mixes (:func:`load_runs`, :func:`length_notes`)
    is listed under *Notes* in ``report.md`` and ``study.json``, and each line
    is passed to ``note`` as well.
    """
    folder = pathlib.Path(folder)
    notes = []
    runs = load_runs(folder, notes)
    notes += length_notes(runs)
    for line in notes:
        if note is not None:
            note(line)
    out = pathlib.Path(out) if out is not None else folder / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out} ({' '.join(str(exc).split())})") from None
    record = study_record(folder, runs, notes)
    figures = [("Cross-entropy on digits 5-9, every run", plot_cross_entropy(runs, out / "cross_entropy.png"))]
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
