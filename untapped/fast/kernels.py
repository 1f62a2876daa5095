"""The C mode's kernels: the fused versions of :mod:`untapped.paper.kernels`, chosen when a graph is built.

:data:`FAST` has the interface of :data:`untapped.paper.kernels.PLAIN`; each
kernel computes the same formula as its plain twin to float32 rounding
(``tests/test_ops.py``) and picks its own gradient:

- ``dense``: each product in the orientation BLAS runs fastest
  (:data:`untapped.fast.matmul.matmul`); a tanh layer adds its bias and applies
  the Cephes tanh in one pass (:data:`untapped.fast.tanh.bias_tanh`), its
  gradient in another (:data:`untapped.fast.tanh.tanh_grad`); a layer over
  several inputs sums their products instead of forming the concatenation::

      concat[x_1, ..., x_k] W + b = sum_i x_i W_i + b

  where ``W_i`` are the rows of ``W`` facing input ``i``. The encoder's first
  layer maps concat[x, y] (10,000 x 794 a batch) to 10 units: the
  concatenation would copy the batch's 31 MB to make a 0.4 MB product, and
  its gradient would form the (discarded) gradient of x as well. The sum
  differs from the single product by float32 reassociation only.
- ``bernoulli_log_lik_rows``: the decoder's sigmoid, clip, log terms and row
  sum in one pass, value and gradient (:mod:`untapped.fast.bernoulli`);
- ``uniform``: the same float32 numbers, a large draw on all cores
  (:mod:`untapped.fast.noise`);
- ``unfeatured_pass``: the reverse pass decodes each distinct (y, z) pair
  once, given the pairs (:mod:`untapped.fast.distinct`;
  ``decode_distinct_pairs`` tells the graph builder to give them).
"""

import numpy as np

from untapped.fast import distinct
from untapped.fast.bernoulli import bernoulli_log_lik_rows
from untapped.fast.matmul import matmul
from untapped.fast.noise import uniform_float32
from untapped.fast.tanh import bias_tanh, tanh
from untapped.paper.kernels import PLAIN


def _activate(product, b, nonlinearity):
    """``nonlinearity(product + b)``; a float32 tanh layer in one pass (:data:`untapped.fast.tanh.bias_tanh`)."""
    if nonlinearity is tanh and b is not None and product.type.dtype == "float32":
        return bias_tanh(product, b)
    if b is not None:
        product = product + b.dimshuffle("x", 0)
    return nonlinearity(product)


class FastKernels:
    """The C mode's kernels (see the module docstring)."""

    name = "fast"
    tanh = tanh
    decode_distinct_pairs = True

    @staticmethod
    def dense(inputs, widths, W, b, nonlinearity):
        if len(inputs) == 1:
            return _activate(matmul(inputs[0], W), b, nonlinearity)
        stops = np.cumsum(widths)
        product = None
        for x, start, stop in zip(inputs, stops - widths, stops):
            term = matmul(x, W[start:stop])
            product = term if product is None else product + term
        return _activate(product, b, nonlinearity)

    @staticmethod
    def bernoulli_log_lik_rows(x, mean):
        fused = bernoulli_log_lik_rows(x, mean)
        return PLAIN.bernoulli_log_lik_rows(x, mean) if fused is None else fused

    @staticmethod
    def unfeatured_pass(nets, y, z, noise, pairs, encode_generated=False):
        return distinct.unfeatured_pass(nets, y, z, noise, pairs, encode_generated)

    @staticmethod
    def uniform(rng, size):
        return uniform_float32(rng, size)


FAST = FastKernels()
