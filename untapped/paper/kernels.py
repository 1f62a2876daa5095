"""The few computations a graph builder may swap for a fused kernel, in stock PyTensor ops.

The paper layer states each formula once, here or where it is used. A few of
them have fused C kernels (:mod:`untapped.fast`) whose gradient must be
chosen before differentiation, so a rewrite of the compiled graph cannot put
them in. Those few go through a *kernels* object, chosen once when the graph
is built: :data:`PLAIN` (this module: the formulas as written, stock ops
only) or :data:`untapped.fast.kernels.FAST`. Every fast kernel is tested
against its plain one (``tests/test_ops.py``).

A kernels object has:

- ``name``: 'plain' or 'fast';
- ``tanh``: the hidden layers' nonlinearity;
- ``dense(inputs, widths, W, b, nonlinearity)``: a dense layer over the
  concatenation of the matrices ``inputs`` (of ``widths`` columns),
  ``nonlinearity(concat[x_1, ..., x_k] W + b)``;
- ``bernoulli_log_lik_rows(x, mean)``: ``sum_d log Bern(x_d; clip(mean_d))``
  per row (eq. 1);
- ``uniform(rng, size)``: ``(next_rng, u)``, a float32 U[0, 1) draw;
- ``decode_distinct_pairs``: whether ``unfeatured_pass`` decodes each
  distinct unfeatured (y, z) pair once, so that the graph builder gives it
  the distinct pairs of a batch;
- ``unfeatured_pass(nets, y, z, noise, pairs, encode_generated)``: the
  reverse pass of Alg. 1 (:func:`untapped.paper.passes.unfeatured_pass`),
  given the distinct pairs of its rows if ``decode_distinct_pairs``, else None.
"""

import numpy as np
import pytensor.tensor as pt

from parmesan_compat.distributions import log_bernoulli
from untapped.paper import passes

#: NumPy's float32 uniforms are 24-bit integers times 2**-24.
UNIFORM_BITS = 24


class PlainKernels:
    """The paper's formulas in stock PyTensor ops (the ``plain`` and ``numba`` modes).

    Used through its instance :data:`PLAIN`; :class:`untapped.fast.kernels.FastKernels`
    has the same interface.

    Attributes
    ----------
    name : str
        ``'plain'``.
    tanh : callable
        The hidden layers' nonlinearity, ``pt.tanh``.
    decode_distinct_pairs : bool
        ``False``: :meth:`unfeatured_pass` decodes every row.
    """

    name = "plain"
    tanh = staticmethod(pt.tanh)
    decode_distinct_pairs = False

    @staticmethod
    def dense(inputs, widths, W, b, nonlinearity):
        """``nonlinearity(concat[x_1, ..., x_k] W + b)``: Lasagne's ``DenseLayer`` on a ``ConcatLayer``.

        Parameters
        ----------
        inputs : sequence of TensorVariable, each (rows, widths[i])
            The matrices x_1, ..., x_k, concatenated along the columns (one is used as it is).
        widths : sequence of int
            Each input's number of columns (unused here; the fast kernel splits ``W`` by them).
        W : TensorSharedVariable, (sum(widths), num_units)
            The weights.
        b : TensorSharedVariable, (num_units,), or None
            The biases, or none.
        nonlinearity : callable
            Applied elementwise to the activation.

        Returns
        -------
        TensorVariable, (rows, num_units)
            The layer's output.
        """
        x = inputs[0] if len(inputs) == 1 else pt.concatenate(list(inputs), axis=1)
        activation = pt.dot(x, W)
        if b is not None:
            activation = activation + b.dimshuffle("x", 0)
        return nonlinearity(activation)

    @staticmethod
    def bernoulli_log_lik_rows(x, mean):
        """``sum_d log Bern(x_d; mean_d)`` per row, the mean clipped to [1e-5, 1 - 1e-5] (eq. 1; ``log_bernoulli``).

        Parameters
        ----------
        x : TensorVariable, (rows, n_features)
            Binary images.
        mean : TensorVariable, (rows, n_features)
            The Bernoulli means.

        Returns
        -------
        TensorVariable, (rows,)
            Each row's log-likelihood.
        """
        return pt.sum(log_bernoulli(x, mean), axis=-1)

    @staticmethod
    def unfeatured_pass(nets, y, z, noise, pairs, encode_generated=False):
        """The reverse pass of Alg. 1 on every row: :func:`untapped.paper.passes.unfeatured_pass`.

        Parameters
        ----------
        nets, y, z, noise, encode_generated
            As for :func:`untapped.paper.passes.unfeatured_pass`.
        pairs : tuple of TensorVariable, or None
            ``(y_distinct, z_distinct, rows)`` with ``y = y_distinct[rows]`` and
            ``z = z_distinct[rows]``, or None (unused here; the fast kernel
            decodes each distinct pair once, and needs them).

        Returns
        -------
        UnfeaturedPass
            The pass's values, one row per row of ``y``.
        """
        return passes.unfeatured_pass(nets, y, z, noise, encode_generated)

    @staticmethod
    def uniform(rng, size):
        """``(next_rng, u)``: U[0, 1) in float32 as ``k 2**-24``, ``k ~ U{0, ..., 2**24 - 1}``.

        NumPy's ``Generator.integers(0, 2**24)`` turns each 32-bit output
        into ``k`` as ``Generator.random(dtype=float32)`` does, so the draws
        and the generator's next state are exactly those of a float32
        ``random`` (``tests/test_kernels.py``). A float64 uniform cast to float32
        could round to 1.0, where the Gumbel transform of the Concrete sample
        is NaN; ``k 2**-24`` is at most ``1 - 2**-24``.

        Parameters
        ----------
        rng : RandomGeneratorSharedVariable
            A shared PyTensor generator (``pytensor.tensor.random.shared_rng``).
        size : tuple of int or of scalar TensorVariable
            The draw's shape, e.g. ``(rows, n_classes)``.

        Returns
        -------
        next_rng : RandomGeneratorVariable
            The generator's state after the draw (to update ``rng`` with).
        u : TensorVariable, float32, shape ``size``
            The uniforms, in [0, 1 - 2**-24].
        """
        next_rng, k = rng.integers(0, 2**UNIFORM_BITS, size=size)
        return next_rng, pt.cast(k, "float32") * np.float32(2.0**-UNIFORM_BITS)


PLAIN = PlainKernels()
