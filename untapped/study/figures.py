"""A study's figures, and a run's own ``curves.png``.

* ``running_mean.png``: the paired mean untapped - M2 and its 95% interval
  against the number of pairs, in seed order (:func:`plot_running_mean`);
* ``cross_entropy.png``: the cross-entropy of every run per model and
  variant, with mean and 95% interval and the paper's values marked;
* ``paired.png``: M2 -> untapped (and each variant) seed by seed;
* ``curves.png``: every training term over the epochs, mean and range over
  seeds, per group (:func:`plot_curves`);
* ``figure2-<group>.png``: Figure 2 (decoder means at z_bar) of every seed;
* a run's ``curves.png`` (:func:`save_run_curves`): its terms per epoch,
  training and evaluation.
"""

import pathlib

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from untapped.files import atomic_output
from untapped.study import stats
from untapped.study.analysis import FIRST
from untapped.study.record import PAPER_CROSS_ENTROPY, UNIFORM_CROSS_ENTROPY
from untapped.study.runs import BASELINE, CURVE_TERMS, REFERENCE, ReportError, by_seed, groups


def draw_figures(runs, analysis, folder, out):
    """Draw the study's figures into ``out``; their ``(title, file name)`` in the report's order.

    ``analysis`` is the pre-stated analysis of the study's record (None
    without pairs). The training curves and the Figure 2 grids need the runs
    read from their folders in ``folder``; a figure with nothing to show is
    left out.
    """
    figures = []
    if analysis is not None:
        earlier = {r["seed"] for r in runs if r["group"] == FIRST and r["source"] != "run folder"}
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
                        plot_curves(runs, out / "curves-variants.png",
                                    ([REFERENCE] if REFERENCE in models else []) + variants,
                                    "Training terms of untapped and its variants")))
    figures = [(title, p) for title, p in figures if p is not None]  # curves need runs read from their folders
    for g in groups(runs):
        grid = plot_figure2(runs, g, folder, out / f"figure2-{g.replace('/', '-')}.png")
        if grid is not None:
            figures.append((f"Figure 2, {g}, every seed", grid))
    return [(title, pathlib.Path(p).name) for title, p in figures]


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, grayscale=False):
    """Write ``fig`` as a PNG; ``grayscale``: in one channel instead of four when every pixel is an opaque gray (a
    grid of 25 seeds' Figure 2 is then about half the size, with the same pixels), else as usual."""
    try:
        with atomic_output(path) as tmp:
            channel = _gray_channel(fig) if grayscale else None
            if channel is not None:
                from PIL import Image

                Image.fromarray(channel, mode="L").save(tmp, format="png", optimize=True)
            else:
                fig.savefig(tmp, format="png")
    except OSError as exc:
        raise ReportError(f"cannot write {path} ({' '.join(str(exc).split())})") from None
    return path


def _gray_channel(fig):
    """The drawn figure's one channel when every pixel is an opaque gray, else None."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    if (rgba[..., :3] == rgba[..., :1]).all() and (rgba[..., 3] == 255).all():
        return np.ascontiguousarray(rgba[..., 0])
    return None


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
    base = by_seed(runs, BASELINE)
    for ax, g in zip(axes, others):
        mine = by_seed(runs, g)
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

    Marks 0, the plan's margin +-:data:`untapped.study.analysis.MARGIN`, and (when
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
        ax.axvline(recorded_pairs + 0.5, color="grey", ls=":", lw=1.2,
                   label=f"the first study's {recorded_pairs} pairs end")
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
        ax.set_title(f"seed {r['seed']}: CE {r['cross_entropy']:.3f}, {r['distinct_digits']} distinct digits",
                     fontsize=11)
    fig.suptitle(f"{group}: Figure 2 of every seed\n(decoder means at z_bar; 'y=k → d': the classifier sees digit d)",
                 fontsize=12)
    return _save(fig, path, grayscale=True)


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
