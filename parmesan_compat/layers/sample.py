"""Sampling layers whose randomness is an explicit input.

Each layer is a Lasagne ``MergeLayer`` whose last incoming layer carries the
noise: an ``InputLayer`` fed with uniform or standard-normal draws. The graph
is built once on those noise tensors; training replaces them with draws from
seeded PyTensor generators, and reference runs feed fixed arrays, so any
framework that consumes the same noise must produce the same numbers.

With ``deterministic=True`` (Lasagne's flag) each layer returns its mode-like
output instead, as the original did: the softmax for the Concrete layer, the
mean for the Gaussian, and the 0.5-thresholded mean for the Bernoulli.
"""

import pytensor.tensor as pt
from pytensor.tensor.special import softmax

from parmesan_compat.backend import FLOATX, load_lasagne

lasagne = load_lasagne()

GUMBEL_EPS = 1e-4


def gaussian_sample(mean, std, eps):
    """Reparameterised Gaussian draw ``z~ = mean + std * eps``, ``eps ~ N(0, 1)`` (Kingma & Welling 2013, eq. 10)."""
    return mean + std * eps


def gumbel_from_uniform(uniform, eps=GUMBEL_EPS):
    """Gumbel(0, 1) noise ``g = -log(-log(u + eps) + eps)`` from ``u ~ U(0, 1)``, with the original's guard ``eps``."""
    return -pt.log(-pt.log(uniform + eps) + eps)


def concrete_sample(logits, uniform, temperature=1.0):
    """Concrete / Gumbel-softmax draw ``y~ = softmax((logits + g) / tau)``
    (Maddison et al. 2016, eq. 6; Jang et al. 2016, eq. 2)."""
    return softmax((logits + gumbel_from_uniform(uniform)) / temperature, axis=-1)


def bernoulli_sample(p, uniform):
    """Bernoulli draw ``x^ = 1[u < p]``, ``u ~ U(0, 1)``, with zero gradient.

    This is how Theano 0.9 sampled a binomial, and its gradient with respect
    to ``p`` is exactly zero (a comparison has none). The original was trained
    that way, which is why the y->x loss J_r^d never trains anything and the
    reverse bound trains only the classifier on generated images
    (the original's ``parmesan/layers/sample.py:240-241``; ``docs/fidelity.md``,
    *Gradient flow*). Later Theano and PyTensor raise instead of returning
    zero; this construction keeps the 2017 behaviour on purpose.
    """
    return pt.cast(pt.lt(uniform, p), FLOATX)


class GaussianSampleLayer(lasagne.layers.MergeLayer):
    """``z~ = mean + std * eps`` from incomings ``[mean, std, eps]``; ``mean`` when deterministic.

    ``std`` is a standard deviation, not a log-variance: the original's
    ``l_log_var`` head is a softplus fed through an identity (its name notwithstanding).
    """

    def __init__(self, mean, std, eps, **kwargs):
        super().__init__([mean, std, eps], **kwargs)

    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, deterministic=False, **kwargs):
        mean, std, eps = inputs
        return mean if deterministic else gaussian_sample(mean, std, eps)


class ConcreteSampleLayer(lasagne.layers.MergeLayer):
    """Concrete sample from incomings ``[logits, uniform]``; ``softmax(logits)`` when deterministic.

    The original hard-codes the temperature to 1 (its annealing code is dead);
    ``temperature`` defaults to that.
    """

    def __init__(self, logits, uniform, temperature=1.0, **kwargs):
        super().__init__([logits, uniform], **kwargs)
        self.temperature = temperature

    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, deterministic=False, **kwargs):
        logits, uniform = inputs
        if deterministic:
            return softmax(logits, axis=-1)
        return concrete_sample(logits, uniform, self.temperature)


class BernoulliSampleLayer(lasagne.layers.MergeLayer):
    """Bernoulli sample ``1[u < p]`` from incomings ``[p, uniform]``; ``1[p >= 0.5]`` when deterministic."""

    def __init__(self, p, uniform, **kwargs):
        super().__init__([p, uniform], **kwargs)

    def get_output_shape_for(self, input_shapes):
        return input_shapes[0]

    def get_output_for(self, inputs, deterministic=False, **kwargs):
        p, uniform = inputs
        if deterministic:
            return pt.cast(pt.ge(p, 0.5), FLOATX)
        return bernoulli_sample(p, uniform)
