"""The three networks of the model (paper eqs. 1-2; ``original_code.md`` §2.2).

- :class:`Classifier`, q_phi(y|x): x -> tanh 50 -> tanh 50 -> 10 logits, then a
  Concrete sample at temperature 1.
- :class:`Encoder`, q_phi(z|x,y): concat[x, y] -> tanh 10 -> tanh 10 -> a linear
  mean and a softplus standard deviation (W = 0, b = 0), a Gaussian sample,
  then the logistic flow into the box (-pi/2, pi/2)^2.
- :class:`Decoder`, p_theta(x|y,z): concat[y, z] -> tanh 250 -> tanh 500 ->
  sigmoid mean of 784 Bernoullis, then a Bernoulli sample.

The forward model uses Classifier and Encoder as its recognition model and
Decoder as its generative model; the reverse model uses them the other way
round (paper §2, App. F). Every weight is shared between the two.

Weights are Glorot-uniform with gain sqrt(2) and biases zero, drawn by
Lasagne's own ``GlorotUniform`` from ``np.random.RandomState(seed)`` in the
original's construction order, so seed 1234 reproduces the original's
initial weights bit for bit.

Each network's inputs, noise included, are Lasagne ``InputLayer``s, so one
call of :func:`lasagne.layers.get_output` evaluates a whole network for any
symbolic inputs: that is how the same weights serve every data source. A
dense layer's output is computed by the graph's kernels
(:mod:`untapped.paper.kernels`): the formula as written, or a fused kernel
with the same values.
"""

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np
import pytensor.tensor as pt

from parmesan_compat.backend import lasagne_rng, load_lasagne
from parmesan_compat.layers import BernoulliSampleLayer, ConcreteSampleLayer, GaussianSampleLayer, LogisticFlowLayer
from parmesan_compat.layers.flow import DEFAULT_HIGH, DEFAULT_LOW
from untapped.paper.kernels import PLAIN

lasagne = load_lasagne()
L = lasagne.layers
GAIN = np.sqrt(2.0)


class DenseLayer(L.DenseLayer):
    """Lasagne's ``DenseLayer`` (same parameters, initialisation and output), computed by ``kernels.dense``.

    Input: a (rows, n_in) matrix; output: ``nonlinearity(x W + b)``, (rows, num_units).
    """

    def __init__(self, incoming, num_units, kernels=PLAIN, **kwargs):
        super().__init__(incoming, num_units, **kwargs)
        self.kernels = kernels

    def get_output_for(self, input, **kwargs):
        return self.kernels.dense([input], [self.input_shape[1]], self.W, self.b, self.nonlinearity)


class ConcatDenseLayer(L.MergeLayer):
    """``DenseLayer(ConcatLayer(incomings))``: the same parameters, initialisation and output.

    Inputs: matrices (rows, n_i); output: ``nonlinearity(concat[x_1, ..., x_k] W + b)``,
    (rows, num_units), computed by ``kernels.dense``.
    """

    def __init__(
        self,
        incomings,
        num_units,
        W=lasagne.init.GlorotUniform(),
        b=lasagne.init.Constant(0.0),
        nonlinearity=None,
        kernels=PLAIN,
        **kwargs,
    ):
        super().__init__(incomings, **kwargs)
        self.nonlinearity = lasagne.nonlinearities.identity if nonlinearity is None else nonlinearity
        self.num_units = num_units
        self.kernels = kernels
        self.widths = [int(np.prod(shape[1:])) for shape in self.input_shapes]
        self.W = self.add_param(W, (sum(self.widths), num_units), name="W")
        self.b = None if b is None else self.add_param(b, (num_units,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shapes):
        return (input_shapes[0][0], self.num_units)

    def get_output_for(self, inputs, **kwargs):
        if any(x.ndim != 2 for x in inputs):
            raise ValueError(f"{self.name}: ConcatDenseLayer takes matrices")
        return self.kernels.dense(inputs, self.widths, self.W, self.b, self.nonlinearity)


def _dense_stack(incoming, units, gain, prefix, kernels):
    """tanh dense layers named ``<prefix>/hidden1``, ``<prefix>/hidden2``, ...

    ``incoming`` is a layer, or a list of layers that the first layer takes
    concatenated (:class:`ConcatDenseLayer`).
    """
    layer = incoming
    for i, n in enumerate(units, start=1):
        cls = ConcatDenseLayer if isinstance(layer, list) else DenseLayer
        layer = cls(layer, n, W=lasagne.init.GlorotUniform(gain), nonlinearity=kernels.tanh, kernels=kernels, name=f"{prefix}/hidden{i}")
    return layer


def _evaluate(layers, inputs, deterministic):
    """One ``get_output`` pass over the ``layers`` dict; returns a dict of expressions."""
    names = list(layers)
    values = L.get_output([layers[n] for n in names], inputs=inputs, deterministic=deterministic)
    return OrderedDict(zip(names, values))


def _evaluate_with_sample(layers, inputs, sample, noise_layer, noise, deterministic):
    """:func:`_evaluate`, plus ``'sample'`` (the layer ``sample``) when there is ``noise`` for
    its ``noise_layer`` or the pass is deterministic (the sample then needs no noise)."""
    if noise is not None or deterministic:
        layers["sample"] = sample
    if noise is not None:
        inputs[noise_layer] = noise
    return _evaluate(layers, inputs, deterministic)


@dataclasses.dataclass(frozen=True)
class ClassifierOutput:
    """q(y|x): the logits l(x), (rows, classes), and a Concrete sample y~ (``None`` without noise)."""

    logits: Any
    sample: Any = None


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
    """q(z|x,y): the Gaussian's mean and std, its draw z~, z = flow(z~) and log|dz/dz~|; each (rows, latent), log_det (rows,)."""

    mean: Any
    std: Any
    z_tilde: Any
    z: Any
    log_det: Any


@dataclasses.dataclass(frozen=True)
class DecoderOutput:
    """p(x|y,z): the Bernoulli mean b(y, z), (rows, features), and a sample x^ (``None`` without noise)."""

    mean: Any
    sample: Any = None


class Classifier:
    """q_phi(y|x) (eq. 2): logits l(x), then a Concrete sample y~ = softmax((l(x) + g) / tau)."""

    name = "classifier"

    def __init__(self, n_features, n_classes, hidden=(50, 50), gain=GAIN, temperature=1.0, kernels=PLAIN):
        self.x = L.InputLayer((None, n_features), name="classifier/x")
        self.gumbel_uniform = L.InputLayer((None, n_classes), name="classifier/gumbel_uniform")
        top = _dense_stack(self.x, hidden, gain, self.name, kernels)
        self.logits = DenseLayer(
            top, n_classes, W=lasagne.init.GlorotUniform(gain), nonlinearity=None, kernels=kernels, name="classifier/logits"
        )
        self.sample = ConcreteSampleLayer(self.logits, self.gumbel_uniform, temperature, name="classifier/sample")

    def __call__(self, x, gumbel_uniform=None, deterministic=False):
        """:class:`ClassifierOutput` for images ``x`` (rows, features); the sample is softmax(logits) if deterministic."""
        out = _evaluate_with_sample(
            OrderedDict(logits=self.logits), {self.x: x}, self.sample, self.gumbel_uniform, gumbel_uniform, deterministic
        )
        return ClassifierOutput(**out)


class Encoder:
    """q_phi(z|x,y) (eq. 2, App. A): z~ = mean + std * eps, then z = a + (b - a) sigmoid(z~) (eq. 10)."""

    name = "encoder"

    def __init__(
        self,
        n_features,
        n_classes,
        n_latent=2,
        hidden=(10, 10),
        gain=GAIN,
        low=DEFAULT_LOW,
        high=DEFAULT_HIGH,
        exact_log_det=False,
        kernels=PLAIN,
    ):
        self.x = L.InputLayer((None, n_features), name="encoder/x")
        self.y = L.InputLayer((None, n_classes), name="encoder/y")
        self.eps = L.InputLayer((None, n_latent), name="encoder/gaussian_eps")
        top = _dense_stack([self.x, self.y], hidden, gain, self.name, kernels)
        self.mean = DenseLayer(
            top, n_latent, W=lasagne.init.GlorotUniform(gain), nonlinearity=None, kernels=kernels, name="encoder/mean"
        )
        # A softplus head read as a standard deviation; zero weights make the
        # initial std softplus(0) = log 2 for every input, as in the original.
        self.std = DenseLayer(
            top,
            n_latent,
            W=lasagne.init.Constant(0.0),
            b=lasagne.init.Constant(0.0),
            nonlinearity=pt.softplus,
            kernels=kernels,
            name="encoder/std",
        )
        self.z_tilde = GaussianSampleLayer(self.mean, self.std, self.eps, name="encoder/z_tilde")
        self.flow = LogisticFlowLayer(self.z_tilde, low, high, exact=exact_log_det, name="encoder/flow")

    def __call__(self, x, y, eps=None, deterministic=False):
        """:class:`EncoderOutput` for (x, y); with ``deterministic`` (no noise), z = flow(mean)."""
        inputs = {self.x: x, self.y: y}
        if eps is not None:
            inputs[self.eps] = eps
        out = _evaluate(OrderedDict(mean=self.mean, std=self.std, z_tilde=self.z_tilde), inputs, deterministic)
        z_tilde = out["z_tilde"]
        return EncoderOutput(
            mean=out["mean"], std=out["std"], z_tilde=z_tilde, z=self.flow.get_output_for(z_tilde), log_det=self.flow.log_det_jacobian(z_tilde)
        )


class Decoder:
    """p_theta(x|y,z) (eq. 1): the Bernoulli mean b_theta(y, z) = sigmoid(...), then a sample x^ = 1[u < b]."""

    name = "decoder"

    def __init__(self, n_features, n_classes, n_latent=2, hidden=(250, 500), gain=GAIN, kernels=PLAIN):
        self.y = L.InputLayer((None, n_classes), name="decoder/y")
        self.z = L.InputLayer((None, n_latent), name="decoder/z")
        self.bernoulli_uniform = L.InputLayer((None, n_features), name="decoder/bernoulli_uniform")
        # Concatenated, unlike the encoder's input: 12 columns are cheap to
        # copy, and one product into 250 units beats two.
        top = _dense_stack(L.ConcatLayer([self.y, self.z], axis=-1), hidden, gain, self.name, kernels)
        self.mean = DenseLayer(
            top, n_features, W=lasagne.init.GlorotUniform(gain), nonlinearity=pt.sigmoid, kernels=kernels, name="decoder/mean"
        )
        self.sample = BernoulliSampleLayer(self.mean, self.bernoulli_uniform, name="decoder/sample")

    def __call__(self, y, z, bernoulli_uniform=None, deterministic=False):
        """:class:`DecoderOutput` for (y, z); the sample is 1[mean >= 0.5] if deterministic, ``None`` without noise."""
        out = _evaluate_with_sample(
            OrderedDict(mean=self.mean), {self.y: y, self.z: z}, self.sample, self.bernoulli_uniform, bernoulli_uniform, deterministic
        )
        return DecoderOutput(**out)


class Networks:
    """The classifier, encoder and decoder, built in the original's order from ``seed``.

    ``params`` lists the 20 shared variables in Lasagne's ``get_all_params``
    order, network by network (classifier, encoder, decoder), W before b,
    layer by layer: the order ``get_param_values`` uses. Each parameter is
    named ``<network>/<layer>/<W|b>``. ``kernels`` compute the dense layers
    (:mod:`untapped.paper.kernels`).
    """

    def __init__(
        self,
        n_features=784,
        n_classes=10,
        n_latent=2,
        classifier_hidden=(50, 50),
        encoder_hidden=(10, 10),
        decoder_hidden=(250, 500),
        gain=GAIN,
        temperature=1.0,
        z_low=DEFAULT_LOW,
        z_high=DEFAULT_HIGH,
        exact_log_det=False,
        seed=1234,
        kernels=PLAIN,
    ):
        self.kernels = kernels
        with lasagne_rng(np.random.RandomState(seed)):
            self.classifier = Classifier(n_features, n_classes, classifier_hidden, gain, temperature, kernels)
            self.encoder = Encoder(n_features, n_classes, n_latent, encoder_hidden, gain, z_low, z_high, exact_log_det, kernels)
            self.decoder = Decoder(n_features, n_classes, n_latent, decoder_hidden, gain, kernels)
        self.by_name = OrderedDict((net.name, net) for net in (self.classifier, self.encoder, self.decoder))
        self.params_by_net = OrderedDict()
        for net_name, tops in (
            ("classifier", [self.classifier.sample]),
            ("encoder", [self.encoder.flow]),
            ("decoder", [self.decoder.sample]),
        ):
            params = L.get_all_params(tops, trainable=True)
            for p in params:
                p.name = p.name.replace(".", "/")
            self.params_by_net[net_name] = params
        self.params = [p for params in self.params_by_net.values() for p in params]

    @property
    def param_names(self):
        return [p.name for p in self.params]
