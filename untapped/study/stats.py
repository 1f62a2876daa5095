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
* :func:`tost`: equivalence within a margin, two one-sided paired t tests.
* :func:`mcnemar_exact`: a yes/no outcome paired by seed, the exact McNemar
  test (the binomial test of the discordant pairs).
* :func:`running_mean`: the mean difference and its interval as the pairs
  accrue, in their order.
* :func:`paired_t_power`: the power of the two-sided paired t test
  (noncentral t).
"""

import math
from collections import OrderedDict

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def describe(values, confidence=CONFIDENCE):
    """n, mean, sample standard deviation (ddof 1) and the t interval of the mean.

    ``ci = mean +- t_{(1+c)/2, n-1} sd / sqrt(n)``; sd and ci are None for
    fewer than two values (values without spread: ``[mean, mean]``).
    """
    x = np.asarray(values, dtype=np.float64)
    out = OrderedDict(n=int(x.size), mean=float(x.mean()) if x.size else None, sd=None, ci=None)
    if x.size >= 2:
        out["sd"] = float(x.std(ddof=1))
        half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1)) * out["sd"] / math.sqrt(x.size)
        out["ci"] = [out["mean"] - half, out["mean"] + half]
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


def tost(d, margin, alpha=0.05):
    """Two one-sided t tests of the mean of the paired differences ``d`` against ``-margin`` and ``+margin``.

    ``p_lower`` tests H0: mean <= -margin against mean > -margin
    (``t = (mean + margin) / se``, upper tail); ``p_upper`` tests H0: mean >=
    +margin against mean < +margin (``t = (mean - margin) / se``, lower tail);
    ``se = sd / sqrt(n)``, n - 1 degrees of freedom. Equivalence is shown at
    level alpha when both reject, that is when ``p = max(p_lower, p_upper) <
    alpha``, or equally when the ``1 - 2 alpha`` t interval (``ci``, 90% for
    alpha 0.05) lies inside (-margin, +margin). None for fewer than two
    differences or no spread.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.size < 2 or float(d.std(ddof=1)) == 0:
        return None
    lower = stats.ttest_1samp(d, -margin, alternative="greater")
    upper = stats.ttest_1samp(d, margin, alternative="less")
    interval = stats.ttest_1samp(d, 0.0).confidence_interval(1 - 2 * alpha)
    p = max(float(lower.pvalue), float(upper.pvalue))
    return OrderedDict(
        n=int(d.size),
        margin=float(margin),
        alpha=float(alpha),
        mean_difference=float(d.mean()),
        t_lower=float(lower.statistic),
        p_lower=float(lower.pvalue),
        t_upper=float(upper.statistic),
        p_upper=float(upper.pvalue),
        p=p,
        ci=[float(interval.low), float(interval.high)],
        confidence=1 - 2 * alpha,
        equivalent=bool(p < alpha),
    )


def mcnemar_exact(x, y):
    """Exact McNemar test of a yes/no outcome paired by seed: ``x[s]`` and ``y[s]`` for the same seeds.

    The 2x2 table counts the seeds by (x, y): ``table[0][0]`` both yes,
    ``table[0][1]`` x yes and y no, ``table[1][0]`` x no and y yes,
    ``table[1][1]`` both no. Under H0 (the outcome is as likely for either)
    each of the ``n = b + c`` discordant seeds falls on either side with
    probability 1/2, so ``p`` is the two-sided binomial test of ``b`` out of
    ``n`` at 1/2 (``scipy.stats.binomtest``); with no discordant seed, p = 1.
    """
    x, y = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired outcomes need the same length, got {x.shape} and {y.shape}")
    table = [[int((x & y).sum()), int((x & ~y).sum())], [int((~x & y).sum()), int((~x & ~y).sum())]]
    b, c = table[0][1], table[1][0]
    p = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return OrderedDict(n=int(x.size), table=table, x_only=b, y_only=c, discordant=b + c, p=p)


def running_mean(d, confidence=CONFIDENCE):
    """The mean of ``d[:k]`` and its t interval for k = 1 .. len(d): how the answer sharpens as pairs accrue.

    A list of ``{pairs, mean, ci}`` (ci None for one pair or no spread).
    """
    d = np.asarray(d, dtype=np.float64)
    out = []
    for k in range(1, d.size + 1):
        head = describe(d[:k], confidence)
        ci = head["ci"] if head["sd"] else None
        out.append(OrderedDict(pairs=k, mean=head["mean"], ci=ci))
    return out


def paired_t_power(n, difference, sd, alpha=0.05):
    """Power of the two-sided paired t test with ``n`` pairs at a true mean difference ``difference``.

    With ``df = n - 1``, critical value ``c = t_{1 - alpha/2, df}`` and
    noncentrality ``delta = difference sqrt(n) / sd``, the power is
    ``P(T' > c) + P(T' < -c)`` for T' noncentral t(df, delta) (``scipy.stats.nct``).
    """
    if n < 2:
        return None
    df = n - 1
    c = stats.t.ppf(1 - alpha / 2, df)
    delta = difference * math.sqrt(n) / sd
    return float(stats.nct.sf(c, df, delta) + stats.nct.cdf(-c, df, delta))


def format_p(p):
    """A p-value for a table: three significant digits, or ``< 0.001``; ``n/a`` for None."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"
