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
symbolic inputs: that is how the same weights serve every data source.
"""

from collections import OrderedDict

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.tensor.elemwise import Elemwise

from parmesan_compat.layers import BernoulliSampleLayer, ConcreteSampleLayer, GaussianSampleLayer, LogisticFlowLayer
from parmesan_compat.layers.flow import DEFAULT_HIGH, DEFAULT_LOW
from untapped import ops
from untapped.backend import lasagne, lasagne_rng

L = lasagne.layers
GAIN = np.sqrt(2.0)


class DenseLayer(L.DenseLayer):
    """Lasagne's ``DenseLayer`` (same parameters, initialisation and output) whose
    product is :data:`untapped.ops.matmul`, which runs each forward and
    gradient product in the orientation BLAS is fastest at, and whose tanh
    layers add the bias and apply the tanh in one vectorised pass
    (:data:`untapped.ops.bias_tanh`)."""

    def get_output_for(self, input, **kwargs):
        if input.ndim != 2:
            return super().get_output_for(input, **kwargs)
        return _activate(ops.matmul(input, self.W), self.b, self.nonlinearity)


def _activate(product, b, nonlinearity):
    """``nonlinearity(product + b)``; a float32 tanh layer in one pass (:data:`untapped.ops.bias_tanh`)."""
    if nonlinearity is ops.tanh and b is not None and product.type.dtype == "float32":
        return ops.bias_tanh(product, b)
    if b is not None:
        product = product + b.dimshuffle("x", 0)
    return nonlinearity(product)


class ConcatDenseLayer(L.MergeLayer):
    """``DenseLayer(ConcatLayer(incomings))`` (the same parameters, initialisation and
    output) computed without forming the concatenation::

        concat[x_1, ..., x_k] W + b = sum_i x_i W_i + b

    where ``W_i`` are the rows of ``W`` facing input ``i``. The encoder's first
    layer maps concat[x, y] (10,000 x 794 a batch) to 10 units: the
    concatenation would copy the batch's 31 MB to make a 0.4 MB product, and
    its gradient would form the (discarded) gradient of x as well. The sum
    differs from the single product by float32 reassociation only.
    """

    def __init__(
        self, incomings, num_units, W=lasagne.init.GlorotUniform(), b=lasagne.init.Constant(0.0), nonlinearity=None, **kwargs
    ):
        super().__init__(incomings, **kwargs)
        self.nonlinearity = lasagne.nonlinearities.identity if nonlinearity is None else nonlinearity
        self.num_units = num_units
        self.widths = [int(np.prod(shape[1:])) for shape in self.input_shapes]
        self.W = self.add_param(W, (sum(self.widths), num_units), name="W")
        self.b = None if b is None else self.add_param(b, (num_units,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shapes):
        return (input_shapes[0][0], self.num_units)

    def get_output_for(self, inputs, **kwargs):
        if any(x.ndim != 2 for x in inputs):
            raise ValueError(f"{self.name}: ConcatDenseLayer takes matrices")
        stops = np.cumsum(self.widths)
        product = None
        for x, start, stop in zip(inputs, stops - self.widths, stops):
            term = ops.matmul(x, self.W[start:stop])
            product = term if product is None else product + term
        return _activate(product, self.b, self.nonlinearity)


def _tanh_layer(incoming, units, gain, name):
    layer = ConcatDenseLayer if isinstance(incoming, list) else DenseLayer
    return layer(incoming, units, W=lasagne.init.GlorotUniform(gain), nonlinearity=ops.tanh, name=name)


def _dense_stack(incoming, units, gain, prefix):
    """tanh dense layers named ``<prefix>/hidden1``, ``<prefix>/hidden2``, ...

    ``incoming`` is a layer, or a list of layers that the first layer takes
    concatenated (:class:`ConcatDenseLayer`). The tanh is
    :data:`untapped.ops.tanh`: the same function as Lasagne's
    ``nonlinearities.tanh`` with vectorisable float32 C code (a few ulps).
    """
    layer = incoming
    for i, n in enumerate(units, start=1):
        layer = _tanh_layer(layer, n, gain, f"{prefix}/hidden{i}")
    return layer


def _evaluate(outputs, inputs, deterministic):
    """One ``get_output`` pass over the ``outputs`` dict's layers; returns a dict of expressions."""
    names = list(outputs)
    values = L.get_output([outputs[n] for n in names], inputs=inputs, deterministic=deterministic)
    return OrderedDict(zip(names, values))


def _evaluate_with_sample(outputs, inputs, sample, noise_layer, noise, deterministic):
    """:func:`_evaluate`, plus ``'sample'`` (the layer ``sample``) when there is ``noise`` for
    its ``noise_layer`` or the pass is deterministic (the sample then needs no noise)."""
    if noise is not None or deterministic:
        outputs["sample"] = sample
    if noise is not None:
        inputs[noise_layer] = noise
    return _evaluate(outputs, inputs, deterministic)


class Classifier:
    """q_phi(y|x) (eq. 2): logits l(x), the softmax pi(x) and a Concrete sample y~."""

    name = "classifier"

    def __init__(self, n_features, n_classes, hidden=(50, 50), gain=GAIN, temperature=1.0):
        self.x = L.InputLayer((None, n_features), name="classifier/x")
        self.gumbel_uniform = L.InputLayer((None, n_classes), name="classifier/gumbel_uniform")
        top = _dense_stack(self.x, hidden, gain, self.name)
        self.logits = DenseLayer(
            top, n_classes, W=lasagne.init.GlorotUniform(gain), nonlinearity=None, name="classifier/logits"
        )
        self.sample = ConcreteSampleLayer(self.logits, self.gumbel_uniform, temperature, name="classifier/sample")

    def __call__(self, x, gumbel_uniform=None, deterministic=False):
        """``{'logits', 'sample'}`` for inputs ``x``; ``sample`` is softmax(logits) if deterministic."""
        return _evaluate_with_sample(
            OrderedDict(logits=self.logits), {self.x: x}, self.sample, self.gumbel_uniform, gumbel_uniform, deterministic
        )


class Encoder:
    """q_phi(z|x,y) (eq. 2, App. A): Gaussian z~ with mean and std heads, then the logistic flow."""

    name = "encoder"

    def __init__(
        self, n_features, n_classes, n_latent=2, hidden=(10, 10), gain=GAIN, low=DEFAULT_LOW, high=DEFAULT_HIGH, exact_log_det=False
    ):
        self.x = L.InputLayer((None, n_features), name="encoder/x")
        self.y = L.InputLayer((None, n_classes), name="encoder/y")
        self.eps = L.InputLayer((None, n_latent), name="encoder/gaussian_eps")
        top = _dense_stack([self.x, self.y], hidden, gain, self.name)
        self.mean = DenseLayer(
            top, n_latent, W=lasagne.init.GlorotUniform(gain), nonlinearity=None, name="encoder/mean"
        )
        # A softplus head read as a standard deviation; zero weights make the
        # initial std softplus(0) = log 2 for every input, as in the original.
        self.std = DenseLayer(
            top, n_latent, W=lasagne.init.Constant(0.0), b=lasagne.init.Constant(0.0), nonlinearity=pt.softplus, name="encoder/std"
        )
        self.z_tilde = GaussianSampleLayer(self.mean, self.std, self.eps, name="encoder/z_tilde")
        self.flow = LogisticFlowLayer(self.z_tilde, low, high, exact=exact_log_det, name="encoder/flow")

    def __call__(self, x, y, eps=None, deterministic=False):
        """``{'mean', 'std', 'z_tilde', 'z', 'log_det'}``; with ``deterministic``, z = flow(mean)."""
        inputs = {self.x: x, self.y: y}
        if eps is not None:
            inputs[self.eps] = eps
        out = _evaluate(OrderedDict(mean=self.mean, std=self.std, z_tilde=self.z_tilde), inputs, deterministic)
        out["z"] = self.flow.get_output_for(out["z_tilde"])
        out["log_det"] = self.flow.log_det_jacobian(out["z_tilde"])
        return out


class Decoder:
    """p_theta(x|y,z) (eq. 1): the Bernoulli mean b_theta(y, z) and a Bernoulli sample x^."""

    name = "decoder"

    def __init__(self, n_features, n_classes, n_latent=2, hidden=(250, 500), gain=GAIN):
        self.y = L.InputLayer((None, n_classes), name="decoder/y")
        self.z = L.InputLayer((None, n_latent), name="decoder/z")
        self.bernoulli_uniform = L.InputLayer((None, n_features), name="decoder/bernoulli_uniform")
        # Concatenated, unlike the encoder's input: 12 columns are cheap to
        # copy, and one product into 250 units beats two.
        top = _dense_stack(L.ConcatLayer([self.y, self.z], axis=-1), hidden, gain, self.name)
        self.mean = DenseLayer(
            top, n_features, W=lasagne.init.GlorotUniform(gain), nonlinearity=pt.sigmoid, name="decoder/mean"
        )
        self.sample = BernoulliSampleLayer(self.mean, self.bernoulli_uniform, name="decoder/sample")

    def __call__(self, y, z, bernoulli_uniform=None, deterministic=False, rows=None):
        """``{'mean', 'sample'}``; ``sample`` is 1[mean >= 0.5] if deterministic, absent without noise.

        ``rows`` (an index vector): decode the pairs ``(y[rows], z[rows])``.
        The network runs once per pair of ``(y, z)`` and its output
        pre-activation is gathered to the rows, so a pair that fills many
        rows is decoded once (the unfeatured source: 10 pairs fill a batch of
        10,000). Each row's mean is the same function of its pair; the sample
        still draws one uniform per row.
        """
        if rows is None:
            inputs = {self.y: y, self.z: z}
            return _evaluate_with_sample(
                OrderedDict(mean=self.mean), inputs, self.sample, self.bernoulli_uniform, bernoulli_uniform, deterministic
            )
        mean = _gather_rows(_evaluate(OrderedDict(mean=self.mean), {self.y: y, self.z: z}, deterministic)["mean"], rows)
        out = OrderedDict(mean=mean)
        if bernoulli_uniform is not None or deterministic:
            out["sample"] = self.sample.get_output_for([mean, bernoulli_uniform], deterministic=deterministic)
        return out


def _gather_rows(mean, rows):
    """``mean[rows]``, gathered before the output sigmoid when there is one.

    The sigmoid then stays the last op, so the fused Bernoulli ops
    (:func:`untapped.ops.bernoulli_log_lik_rows`, the sample rewrite) still
    find its pre-activation.
    """
    owner = mean.owner
    if owner is not None and isinstance(owner.op, Elemwise) and owner.op.scalar_op == ps.sigmoid:
        return pt.sigmoid(_take_rows(owner.inputs[0], rows))
    return _take_rows(mean, rows)


def _take_rows(a, rows):
    """``a[rows]``; for float32 matrices :data:`untapped.ops.gather_rows`, whose gradient runs in C."""
    if a.ndim == 2 and a.type.dtype == "float32":
        return ops.gather_rows(a, rows)
    return a[rows]


class Networks:
    """The classifier, encoder and decoder, built in the original's order from ``seed``.

    ``params`` lists the 20 shared variables in Lasagne's ``get_all_params``
    order, network by network (classifier, encoder, decoder), W before b,
    layer by layer: the order ``get_param_values`` uses. Each parameter is
    named ``<network>/<layer>/<W|b>``.
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
    ):
        with lasagne_rng(np.random.RandomState(seed)):
            self.classifier = Classifier(n_features, n_classes, classifier_hidden, gain, temperature)
            self.encoder = Encoder(n_features, n_classes, n_latent, encoder_hidden, gain, z_low, z_high, exact_log_det)
            self.decoder = Decoder(n_features, n_classes, n_latent, decoder_hidden, gain)
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
