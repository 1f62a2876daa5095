"""Summary and paired statistics over seeds, for the study's report (SciPy).

A study trains M2 and untapped with the same seeds; a seed fixes the data
split and the initial weights of both, so the two models are compared
*paired*, seed by seed: the difference ``d_s = x_s - y_s`` of a metric
between the two runs of seed ``s``.

* :func:`describe`: n, mean, sample sd and a 95% t confidence interval of one
  model's values.
* :func:`paired`: the mean difference with its 95% t interval, the paired t
  test, the Wilcoxon signed-rank test and the effect size d_z = mean(d) /
  sd(d) (Cohen's d for paired samples).
* :func:`adjust`: p-values of a family of comparisons adjusted for their
  number (Benjamini-Hochberg): a study makes several paired comparisons, and
  one p < 0.05 among nine is no surprise.
"""

import math
from collections import OrderedDict

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def describe(values, confidence=CONFIDENCE):
    """n, mean, sample standard deviation (ddof 1) and the t interval of the mean.

    ``ci = mean +- t_{(1+c)/2, n-1} sd / sqrt(n)``; sd and ci are None for
    fewer than two values.
    """
    x = np.asarray(values, dtype=np.float64)
    out = OrderedDict(n=int(x.size), mean=float(x.mean()) if x.size else None, sd=None, ci=None)
    if x.size >= 2:
        out["sd"] = float(x.std(ddof=1))
        interval = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
        out["ci"] = [float(interval.low), float(interval.high)]
    return out


def paired(x, y, confidence=CONFIDENCE):
    """Paired comparison of ``x`` against ``y`` (same seeds, same order): ``d = x - y``.

    Returns an ordered dict with ``n``, ``mean_difference``, ``sd_difference``,
    ``ci`` (the t interval of the mean difference), ``t`` and ``t_p`` (paired t
    test, two-sided), ``wilcoxon`` and ``wilcoxon_p`` (signed-rank test,
    two-sided; exact for small n without ties, as SciPy chooses), ``d_z``
    (mean / sd of the differences) and ``x_better`` (seeds with d < 0: a lower
    cross-entropy is better). Tests need at least two pairs (None otherwise);
    ``d_z`` is None when every difference is the same.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need the same length, got {x.shape} and {y.shape}")
    d = x - y
    out = OrderedDict(
        n=int(d.size),
        mean_difference=float(d.mean()) if d.size else None,
        sd_difference=None,
        ci=None,
        t=None,
        t_p=None,
        wilcoxon=None,
        wilcoxon_p=None,
        d_z=None,
        x_better=int((d < 0).sum()),
    )
    if d.size < 2:
        return out
    sd = float(d.std(ddof=1))
    out["sd_difference"] = sd
    if sd > 0:
        t = stats.ttest_rel(x, y)
        interval = t.confidence_interval(confidence)
        out.update(t=float(t.statistic), t_p=float(t.pvalue), ci=[float(interval.low), float(interval.high)])
        out["d_z"] = float(d.mean() / sd)
    if np.any(d != 0):
        w = stats.wilcoxon(x, y)
        out.update(wilcoxon=float(w.statistic), wilcoxon_p=float(w.pvalue))
    return out


def adjust(p_values):
    """Benjamini-Hochberg adjusted p-values of one family of tests, in the given order.

    With the m p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value of
    ``p_(i)`` is ``min(1, min_{j >= i} m p_(j) / j)`` (SciPy's
    ``false_discovery_control``). Entries that are None (no test) stay None and
    do not count in m.
    """
    present = [i for i, p in enumerate(p_values) if p is not None]
    out = [None] * len(p_values)
    if present:
        adjusted = stats.false_discovery_control([p_values[i] for i in present], method="bh")
        for i, q in zip(present, adjusted):
            out[i] = float(q)
    return out


def format_p(p):
    """A p-value for a table: three significant digits, or ``< 0.001``; ``n/a`` for None."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"
