"""The three networks of the model (paper eqs. 1-2; the original's ``M12.py:77-162``).

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
original's construction order, so the original's seed
(:data:`untapped.presets.DEFAULT_SEED`) reproduces its initial weights bit
for bit.

Each network's inputs, noise included, are Lasagne ``InputLayer``s, so one
call of :func:`lasagne.layers.get_output` evaluates a whole network for any
symbolic inputs: that is how the same weights serve every data source. The
dense layers (:mod:`untapped.paper.layers`) are Lasagne's, with their output
computed by the graph's kernels (:mod:`untapped.paper.kernels`): the formula
as written, or a fused kernel with the same values.
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
from untapped.paper.layers import DenseLayer, dense_stack
from untapped.presets import (
    CLASSIFIER_HIDDEN,
    DECODER_HIDDEN,
    DEFAULT_SEED,
    ENCODER_HIDDEN,
    N_CLASSES,
    N_FEATURES,
    N_LATENT,
)

lasagne = load_lasagne()
L = lasagne.layers
GAIN = np.sqrt(2.0)


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
    """q(y|x): the logits l(x) and a Concrete sample y~ (``None`` without noise).

    Attributes
    ----------
    logits : TensorVariable, (rows, n_classes)
        The logits l(x).
    sample : TensorVariable, (rows, n_classes), or None
        The Concrete sample y~ = softmax((l(x) + g) / tau); softmax(l(x)) if deterministic.
    """

    logits: Any
    sample: Any = None


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
    """q(z|x,y): the Gaussian's mean and std, its draw z~, z = flow(z~) and log|dz/dz~|; each (rows, n_latent),
    log_det (rows,).

    Attributes
    ----------
    mean : TensorVariable, (rows, n_latent)
        The Gaussian's mean mu(x, y).
    std : TensorVariable, (rows, n_latent)
        Its standard deviation sigma(x, y), a softplus.
    z_tilde : TensorVariable, (rows, n_latent)
        The draw z~ = mu + sigma eps; the mean if deterministic.
    z : TensorVariable, (rows, n_latent)
        z = a + (b - a) sigmoid(z~), in the box (eq. 10).
    log_det : TensorVariable, (rows,)
        log|det dz/dz~| at z~ (eq. 16).
    """

    mean: Any
    std: Any
    z_tilde: Any
    z: Any
    log_det: Any


@dataclasses.dataclass(frozen=True)
class DecoderOutput:
    """p(x|y,z): the Bernoulli mean b(y, z), (rows, n_features), and a sample x^ (``None`` without noise).

    Attributes
    ----------
    mean : TensorVariable, (rows, n_features)
        The Bernoulli mean b_theta(y, z), a sigmoid.
    sample : TensorVariable, (rows, n_features), or None
        The sample x^ = 1[u < b], with zero gradient; 1[b >= 0.5] if deterministic.
    """

    mean: Any
    sample: Any = None


class Classifier:
    """q_phi(y|x) (eq. 2): logits l(x), then a Concrete sample y~ = softmax((l(x) + g) / tau).

    With the defaults: x (rows, 784) -> tanh 50 -> tanh 50 -> logits (rows, 10).

    Attributes
    ----------
    x : InputLayer, (None, n_features)
        The images.
    gumbel_uniform : InputLayer, (None, n_classes)
        The Concrete sample's uniform noise u, g = -log(-log(u + 1e-4) + 1e-4).
    logits : DenseLayer, (None, n_classes)
        The linear output layer, l(x).
    sample : ConcreteSampleLayer, (None, n_classes)
        The Concrete sample y~.
    """

    name = "classifier"

    def __init__(self, n_features, n_classes, hidden=CLASSIFIER_HIDDEN, gain=GAIN, temperature=1.0, kernels=PLAIN):
        """Build the layers; the weights come from Lasagne's generator (see :class:`Networks`).

        Parameters
        ----------
        n_features : int
            The image size (784 for MNIST).
        n_classes : int
            The number of classes (10).
        hidden : tuple of int, optional
            The tanh layers' widths; default ``CLASSIFIER_HIDDEN``.
        gain : float, optional
            The Glorot-uniform gain of every weight; default sqrt(2).
        temperature : float, optional
            The Concrete temperature tau; default 1, the original's.
        kernels : PlainKernels or FastKernels, optional
            Computes the dense layers (:mod:`untapped.paper.kernels`); default ``PLAIN``.
        """
        self.x = L.InputLayer((None, n_features), name="classifier/x")
        self.gumbel_uniform = L.InputLayer((None, n_classes), name="classifier/gumbel_uniform")
        top = dense_stack(self.x, hidden, gain, self.name, kernels)
        self.logits = DenseLayer(
            top,
            n_classes,
            W=lasagne.init.GlorotUniform(gain),
            nonlinearity=None,
            kernels=kernels,
            name="classifier/logits",
        )
        self.sample = ConcreteSampleLayer(self.logits, self.gumbel_uniform, temperature, name="classifier/sample")

    def __call__(self, x, gumbel_uniform=None, deterministic=False):
        """:class:`ClassifierOutput` for images ``x`` (rows, n_features); the sample is softmax(logits) if
        deterministic.

        Parameters
        ----------
        x : TensorVariable, (rows, n_features)
            The images.
        gumbel_uniform : TensorVariable, (rows, n_classes), optional
            U(0, 1) noise for the Concrete sample; without it (and not
            deterministic) there is no sample.
        deterministic : bool, optional
            Lasagne's flag: the sample is then softmax(logits), noise or not.

        Returns
        -------
        ClassifierOutput
            ``logits`` (rows, n_classes) and ``sample`` (rows, n_classes) or ``None``.
        """
        out = _evaluate_with_sample(
            OrderedDict(logits=self.logits),
            {self.x: x},
            self.sample,
            self.gumbel_uniform,
            gumbel_uniform,
            deterministic,
        )
        return ClassifierOutput(**out)


class Encoder:
    """q_phi(z|x,y) (eq. 2, App. A): z~ = mean + std * eps, then z = a + (b - a) sigmoid(z~) (eq. 10).

    With the defaults: concat[x, y] (rows, 784 + 10) -> tanh 10 -> tanh 10 -> a linear
    mean (rows, 2) and a softplus std (rows, 2); the std's weights and biases start at zero.

    Attributes
    ----------
    x : InputLayer, (None, n_features)
        The images.
    y : InputLayer, (None, n_classes)
        The labels: one-hot, or a Concrete sample.
    eps : InputLayer, (None, n_latent)
        The Gaussian noise, N(0, 1).
    mean : DenseLayer, (None, n_latent)
        The Gaussian's mean mu(x, y).
    std : DenseLayer, (None, n_latent)
        Its standard deviation sigma(x, y).
    z_tilde : GaussianSampleLayer, (None, n_latent)
        The draw z~ = mu + sigma eps.
    flow : LogisticFlowLayer, (None, n_latent)
        z = flow(z~); also gives ``log_det_jacobian(z~)``, (rows,), and ``inverse(z)``, (rows, n_latent).
    """

    name = "encoder"

    def __init__(
        self,
        n_features,
        n_classes,
        n_latent=N_LATENT,
        hidden=ENCODER_HIDDEN,
        gain=GAIN,
        low=DEFAULT_LOW,
        high=DEFAULT_HIGH,
        exact_log_det=False,
        kernels=PLAIN,
    ):
        """Build the layers; the weights come from Lasagne's generator (see :class:`Networks`).

        Parameters
        ----------
        n_features : int
            The image size (784 for MNIST).
        n_classes : int
            The number of classes (10).
        n_latent : int, optional
            The dimension of z; default ``N_LATENT``.
        hidden : tuple of int, optional
            The tanh layers' widths; default ``ENCODER_HIDDEN``.
        gain : float, optional
            The Glorot-uniform gain of the hidden layers' and the mean's weights; default sqrt(2).
        low, high : float, optional
            The flow's box (a, b); default the original's (-pi/2, pi/2).
        exact_log_det : bool, optional
            The exact log-det instead of the original's ``log(1e-5 + prod_i ...)`` (:mod:`untapped.paper.flow`).
        kernels : PlainKernels or FastKernels, optional
            Computes the dense layers (:mod:`untapped.paper.kernels`); default ``PLAIN``.
        """
        self.x = L.InputLayer((None, n_features), name="encoder/x")
        self.y = L.InputLayer((None, n_classes), name="encoder/y")
        self.eps = L.InputLayer((None, n_latent), name="encoder/gaussian_eps")
        top = dense_stack([self.x, self.y], hidden, gain, self.name, kernels)
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
        """:class:`EncoderOutput` for (x, y); with ``deterministic`` (no noise), z = flow(mean).

        Parameters
        ----------
        x : TensorVariable, (rows, n_features)
            The images.
        y : TensorVariable, (rows, n_classes)
            The labels: one-hot, or a Concrete sample y~.
        eps : TensorVariable, (rows, n_latent), optional
            N(0, 1) noise for z~. Without it and not deterministic, the draw
            reads the layer's own input variable ``encoder/gaussian_eps``.
        deterministic : bool, optional
            Lasagne's flag: then z~ = mean, noise or not.

        Returns
        -------
        EncoderOutput
            ``mean``, ``std``, ``z_tilde``, ``z``: (rows, n_latent) each; ``log_det``: (rows,).
        """
        inputs = {self.x: x, self.y: y}
        if eps is not None:
            inputs[self.eps] = eps
        out = _evaluate(OrderedDict(mean=self.mean, std=self.std, z_tilde=self.z_tilde), inputs, deterministic)
        z_tilde = out["z_tilde"]
        return EncoderOutput(
            mean=out["mean"],
            std=out["std"],
            z_tilde=z_tilde,
            z=self.flow.get_output_for(z_tilde),
            log_det=self.flow.log_det_jacobian(z_tilde),
        )


class Decoder:
    """p_theta(x|y,z) (eq. 1): the Bernoulli mean b_theta(y, z) = sigmoid(...), then a sample x^ = 1[u < b].

    With the defaults: concat[y, z] (rows, 10 + 2) -> tanh 250 -> tanh 500 -> sigmoid mean (rows, 784).

    Attributes
    ----------
    y : InputLayer, (None, n_classes)
        The labels: one-hot, or a Concrete sample.
    z : InputLayer, (None, n_latent)
        The latent codes, in the flow's box.
    bernoulli_uniform : InputLayer, (None, n_features)
        The Bernoulli sample's uniform noise u.
    mean : DenseLayer, (None, n_features)
        The Bernoulli mean b_theta(y, z).
    sample : BernoulliSampleLayer, (None, n_features)
        The sample x^ = 1[u < b].
    """

    name = "decoder"

    def __init__(self, n_features, n_classes, n_latent=N_LATENT, hidden=DECODER_HIDDEN, gain=GAIN, kernels=PLAIN):
        """Build the layers; the weights come from Lasagne's generator (see :class:`Networks`).

        Parameters
        ----------
        n_features : int
            The image size (784 for MNIST).
        n_classes : int
            The number of classes (10).
        n_latent : int, optional
            The dimension of z; default ``N_LATENT``.
        hidden : tuple of int, optional
            The tanh layers' widths; default ``DECODER_HIDDEN``.
        gain : float, optional
            The Glorot-uniform gain of every weight; default sqrt(2).
        kernels : PlainKernels or FastKernels, optional
            Computes the dense layers (:mod:`untapped.paper.kernels`); default ``PLAIN``.
        """
        self.y = L.InputLayer((None, n_classes), name="decoder/y")
        self.z = L.InputLayer((None, n_latent), name="decoder/z")
        self.bernoulli_uniform = L.InputLayer((None, n_features), name="decoder/bernoulli_uniform")
        # Concatenated, unlike the encoder's input: 12 columns are cheap to
        # copy, and one product into 250 units beats two.
        top = dense_stack(L.ConcatLayer([self.y, self.z], axis=-1), hidden, gain, self.name, kernels)
        self.mean = DenseLayer(
            top,
            n_features,
            W=lasagne.init.GlorotUniform(gain),
            nonlinearity=pt.sigmoid,
            kernels=kernels,
            name="decoder/mean",
        )
        self.sample = BernoulliSampleLayer(self.mean, self.bernoulli_uniform, name="decoder/sample")

    def __call__(self, y, z, bernoulli_uniform=None, deterministic=False):
        """:class:`DecoderOutput` for (y, z); the sample is 1[mean >= 0.5] if deterministic, ``None`` without noise.

        Parameters
        ----------
        y : TensorVariable, (rows, n_classes)
            The labels: one-hot, or a Concrete sample y~.
        z : TensorVariable, (rows, n_latent)
            The latent codes.
        bernoulli_uniform : TensorVariable, (rows, n_features), optional
            U(0, 1) noise for the sample; without it (and not deterministic) there is no sample.
        deterministic : bool, optional
            Lasagne's flag: the sample is then 1[mean >= 0.5], noise or not.

        Returns
        -------
        DecoderOutput
            ``mean`` (rows, n_features) and ``sample`` (rows, n_features) or ``None``.
        """
        out = _evaluate_with_sample(
            OrderedDict(mean=self.mean),
            {self.y: y, self.z: z},
            self.sample,
            self.bernoulli_uniform,
            bernoulli_uniform,
            deterministic,
        )
        return DecoderOutput(**out)


class Networks:
    """The classifier, encoder and decoder, built in the original's order from ``seed``.

    ``params`` lists the 20 shared variables in Lasagne's ``get_all_params``
    order, network by network (classifier, encoder, decoder), W before b,
    layer by layer: the order ``get_param_values`` uses. Each parameter is
    named ``<network>/<layer>/<W|b>``. ``kernels`` compute the dense layers
    (:mod:`untapped.paper.kernels`).

    Attributes
    ----------
    classifier : Classifier
        q_phi(y|x).
    encoder : Encoder
        q_phi(z|x,y).
    decoder : Decoder
        p_theta(x|y,z).
    by_name : OrderedDict of str to network
        The three networks by their ``name``: 'classifier', 'encoder', 'decoder'.
    params_by_net : OrderedDict of str to list of TensorSharedVariable
        Each network's trainable parameters, in ``get_all_params`` order.
    params : list of TensorSharedVariable
        All of them (20 with the defaults), network by network. A layer's W is (n_in, n_out)
        and its b (n_out,); with the defaults: classifier 784->50->50->10,
        encoder (784+10)->10->10->2 (mean and std), decoder (10+2)->250->500->784.
    kernels : PlainKernels or FastKernels
        As given.
    """

    def __init__(
        self,
        n_features=N_FEATURES,
        n_classes=N_CLASSES,
        n_latent=N_LATENT,
        classifier_hidden=CLASSIFIER_HIDDEN,
        encoder_hidden=ENCODER_HIDDEN,
        decoder_hidden=DECODER_HIDDEN,
        gain=GAIN,
        temperature=1.0,
        z_low=DEFAULT_LOW,
        z_high=DEFAULT_HIGH,
        exact_log_det=False,
        seed=DEFAULT_SEED,
        kernels=PLAIN,
    ):
        """Build the three networks in the original's order, drawing their weights from ``seed``.

        Parameters
        ----------
        n_features : int, optional
            The image size; default ``N_FEATURES`` (MNIST's).
        n_classes : int, optional
            The number of classes; default ``N_CLASSES``.
        n_latent : int, optional
            The dimension of z; default ``N_LATENT``.
        classifier_hidden, encoder_hidden, decoder_hidden : tuple of int, optional
            Each network's tanh widths; default ``CLASSIFIER_HIDDEN``, ``ENCODER_HIDDEN``, ``DECODER_HIDDEN``.
        gain : float, optional
            The Glorot-uniform gain; default sqrt(2).
        temperature : float, optional
            The classifier's Concrete temperature; default 1.
        z_low, z_high : float, optional
            The encoder's box for z; default (-pi/2, pi/2).
        exact_log_det : bool, optional
            The encoder flow's exact log-det (:class:`Encoder`); default ``False``, the original's.
        seed : int, optional
            Seeds the ``np.random.RandomState`` the weights are drawn from; default ``DEFAULT_SEED``, the original's.
        kernels : PlainKernels or FastKernels, optional
            Computes the dense layers (:mod:`untapped.paper.kernels`); default ``PLAIN``.
        """
        self.kernels = kernels
        with lasagne_rng(np.random.RandomState(seed)):
            self.classifier = Classifier(n_features, n_classes, classifier_hidden, gain, temperature, kernels)
            self.encoder = Encoder(
                n_features, n_classes, n_latent, encoder_hidden, gain, z_low, z_high, exact_log_det, kernels
            )
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
        """The names of :attr:`params`, in order.

        Returns
        -------
        list of str
            ``<network>/<layer>/<W|b>`` each, e.g. ``'encoder/hidden1/W'``.
        """
        return [p.name for p in self.params]
