"""The reverse pass, decoding each distinct unfeatured (y, z) pair once.

The unfeatured source is 10 pairs, repeated to fill a batch (1,000 times
each at batch 10,000). :func:`unfeatured_pass` runs the decoder once per
distinct pair and gathers its output pre-activation to the rows
(:class:`untapped.fast.rows.GatherRows`, whose gradient adds the rows back
in C), then finishes the pass as the paper layer does
(:func:`untapped.paper.passes.unfeatured_values`). Each row's mean is the
same function of its pair; the sample still draws one uniform per row.
It is :data:`untapped.fast.kernels.FAST`'s ``unfeatured_pass``; the graph
builder gives it the distinct pairs of a batch at compile time
(``kernels.decode_distinct_pairs``).
"""

import pytensor.tensor as pt

from untapped.fast.patterns import sigmoid_input
from untapped.fast.rows import gather_rows
from untapped.paper.passes import unfeatured_values


def gather_mean_rows(mean, rows):
    """``mean[rows]``, gathered before the output sigmoid when there is one.

    The sigmoid then stays the last op, so the fused Bernoulli kernels
    (:mod:`untapped.fast.bernoulli`) still find its pre-activation.
    """
    logits = sigmoid_input(mean)
    if logits is not None:
        return pt.sigmoid(_take_rows(logits, rows))
    return _take_rows(mean, rows)


def _take_rows(a, rows):
    """``a[rows]``; for float32 matrices :data:`untapped.fast.rows.gather_rows`, whose gradient runs in C."""
    if a.ndim == 2 and a.type.dtype == "float32":
        return gather_rows(a, rows)
    return a[rows]


def unfeatured_pass(nets, y, z, noise, distinct, encode_generated=False):
    """:func:`untapped.paper.passes.unfeatured_pass`, with the decoder run on ``distinct`` pairs.

    ``distinct`` is ``(y_distinct, z_distinct, rows)`` with ``y = y_distinct[rows]``
    and ``z = z_distinct[rows]``; the values are those of the paper's pass.
    """
    y_distinct, z_distinct, rows = distinct
    mean = gather_mean_rows(nets.decoder(y_distinct, z_distinct).mean, rows)
    sample = nets.decoder.sample.get_output_for([mean, noise["unfeatured/bernoulli_uniform"]])
    return unfeatured_values(nets, y, z, mean, sample, encode_generated)
