"""How each data source flows through the shared networks (paper Alg. 1).

Three sources, three passes, exactly as the original wires them
(the original's ``M12.py:578-632``, with eq_samples = iw_samples = 1):

- labeled (x_n, y_n): the classifier gives a Concrete sample y~_n (for the
  x->y loss); the encoder, fed the one-hot y_n, gives z_n; the decoder, fed
  (y_n, z_n), gives the Bernoulli mean and a sample x^_n (for the y->x loss).
  One z_n serves both the labeled bound and the y->x loss.
- unlabeled x_m: y~_m from the classifier feeds both the encoder and the
  decoder; z_m from the encoder feeds the decoder.
- unfeatured (y_k, z_k): the decoder generates x^_k from the observed pair;
  the classifier scores x^_k. The paper's eq. 17 variant also encodes
  (x^_k, y_k) to score the observed z_k.

Every random draw is a named noise tensor (:data:`untapped.paper.samplers.NOISE`),
so the passes are pure functions of data, parameters and noise. Each pass
returns a frozen dataclass of its symbolic values, (rows, width) matrices
and (rows,) vectors; :meth:`PassValues.items` lists those present, in the
order reference bundles name them (``<source>/<name>``).
"""

import dataclasses
from collections import OrderedDict
from typing import Any

import pytensor.tensor as pt
from pytensor.tensor.special import softmax

#: The data a batch holds, with each array's width.
BATCH = OrderedDict(
    [
        ("labeled_x", "n_features"),
        ("labeled_y", "n_classes"),
        ("unlabeled_x", "n_features"),
        ("unfeatured_y", "n_classes"),
        ("unfeatured_z", "n_latent"),
    ]
)

#: The source each batch array belongs to.
BATCH_SOURCE = {name: name.rsplit("_", 1)[0] for name in BATCH}

#: Which batch array gives each source its number of rows.
SOURCE_ROWS = {"labeled": "labeled_x", "unlabeled": "unlabeled_x", "unfeatured": "unfeatured_y"}


def symbolic_batch():
    """Symbolic float matrices for the five batch arrays, named as :data:`BATCH`.

    Returns
    -------
    OrderedDict of str to TensorVariable
        ``labeled_x`` (rows, n_features), ``labeled_y`` (rows, n_classes, one-hot),
        ``unlabeled_x`` (rows, n_features), ``unfeatured_y`` (rows, n_classes) and
        ``unfeatured_z`` (rows, n_latent); each source has its own number of rows.
    """
    return OrderedDict((name, pt.matrix(name)) for name in BATCH)


class PassValues:
    """What the passes share: their values by name, in field order, leaving out those a pass lacks."""

    def items(self):
        """The values present, by name.

        Returns
        -------
        list of (str, TensorVariable)
            ``(field name, value)`` in field order, the ``None`` fields left out; each value is
            (rows, width) or (rows,).
        """
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def replace(self, **values):
        """A copy with some values replaced.

        Parameters
        ----------
        **values : TensorVariable
            New values by field name, each of the shape of the one it replaces.

        Returns
        -------
        PassValues
            A new instance of the same class.
        """
        return dataclasses.replace(self, **values)


@dataclasses.dataclass(frozen=True)
class UnlabeledPass(PassValues):
    """The unlabeled pass: y~ ~ q(y|x), z ~ q(z|x,y~), and the Bernoulli mean of p(x|y~,z).

    Attributes
    ----------
    logits : TensorVariable, (rows, n_classes)
        The classifier's logits l(x).
    y_probs : TensorVariable, (rows, n_classes)
        softmax(l(x)).
    y_sample : TensorVariable, (rows, n_classes)
        The Concrete sample y~.
    z_mean : TensorVariable, (rows, n_latent)
        The encoder's mean, given (x, y~).
    z_std : TensorVariable, (rows, n_latent)
        The encoder's standard deviation.
    z_tilde : TensorVariable, (rows, n_latent)
        The Gaussian draw z~.
    z : TensorVariable, (rows, n_latent)
        flow(z~), in the box.
    z_log_det : TensorVariable, (rows,)
        log|det dz/dz~|.
    x_mean : TensorVariable, (rows, n_features)
        The decoder's Bernoulli mean b(y~, z).
    """

    logits: Any
    y_probs: Any
    y_sample: Any
    z_mean: Any
    z_std: Any
    z_tilde: Any
    z: Any
    z_log_det: Any
    x_mean: Any


@dataclasses.dataclass(frozen=True)
class LabeledPass(UnlabeledPass):
    """The labeled pass: the unlabeled pass's values and x^.

    q(y|x) (logits, softmax, Concrete sample y~), z ~ q(z|x,y) (mean, std,
    z~, z, log-det), and p(x|y,z) (Bernoulli mean, sample x^). The encoder
    and decoder are fed the observed one-hot y, not y~.

    Attributes
    ----------
    logits : TensorVariable, (rows, n_classes)
        The classifier's logits l(x).
    y_probs : TensorVariable, (rows, n_classes)
        softmax(l(x)).
    y_sample : TensorVariable, (rows, n_classes)
        The Concrete sample y~ (for the x->y loss).
    z_mean : TensorVariable, (rows, n_latent)
        The encoder's mean, given (x, y).
    z_std : TensorVariable, (rows, n_latent)
        The encoder's standard deviation.
    z_tilde : TensorVariable, (rows, n_latent)
        The Gaussian draw z~.
    z : TensorVariable, (rows, n_latent)
        flow(z~), in the box.
    z_log_det : TensorVariable, (rows,)
        log|det dz/dz~|.
    x_mean : TensorVariable, (rows, n_features)
        The decoder's Bernoulli mean b(y, z).
    x_sample : TensorVariable, (rows, n_features)
        The Bernoulli sample x^ (for the y->x loss).
    """

    x_sample: Any = None


@dataclasses.dataclass(frozen=True)
class UnfeaturedPass(PassValues):
    """The reverse pass: x^ ~ p(x|y,z) (mean, sample), q(y|x^) (logits, softmax).

    With eq. 17 as printed also q(z|x^,y)'s mean and std and the observed z
    mapped back through the flow (z~, log-det); otherwise those four are ``None``.

    Attributes
    ----------
    logits : TensorVariable, (rows, n_classes)
        The classifier's logits l(x^).
    y_probs : TensorVariable, (rows, n_classes)
        softmax(l(x^)).
    x_mean : TensorVariable, (rows, n_features)
        The decoder's Bernoulli mean b(y, z).
    x_sample : TensorVariable, (rows, n_features)
        The generated image x^.
    z_mean : TensorVariable, (rows, n_latent), or None
        The encoder's mean given (x^, y) (eq. 17 only).
    z_std : TensorVariable, (rows, n_latent), or None
        The encoder's standard deviation given (x^, y) (eq. 17 only).
    z_tilde : TensorVariable, (rows, n_latent), or None
        The observed z mapped back through the flow, flow^-1(z) (eq. 17 only).
    z_log_det : TensorVariable, (rows,), or None
        log|det dz/dz~| at that z~ (eq. 17 only).
    """

    logits: Any
    y_probs: Any
    x_mean: Any
    x_sample: Any
    z_mean: Any = None
    z_std: Any = None
    z_tilde: Any = None
    z_log_det: Any = None


def _classified(cls):
    return dict(logits=cls.logits, y_probs=softmax(cls.logits, axis=-1))


def _encoded(enc):
    return dict(z_mean=enc.mean, z_std=enc.std, z_tilde=enc.z_tilde, z=enc.z, z_log_det=enc.log_det)


def labeled_pass(nets, x, y, noise):
    """Forward pass of a labeled batch (x, one-hot y) through all three networks: :class:`LabeledPass`.

    Parameters
    ----------
    nets : Networks
        The shared networks (:class:`untapped.paper.networks.Networks`).
    x : TensorVariable, (rows, n_features)
        The labeled images.
    y : TensorVariable, (rows, n_classes)
        Their one-hot labels.
    noise : mapping of str to TensorVariable
        The noise by :func:`~untapped.paper.samplers.noise_key`; uses ``labeled/gumbel_uniform``
        (rows, n_classes), ``labeled/gaussian_eps`` (rows, n_latent) and
        ``labeled/bernoulli_uniform`` (rows, n_features).

    Returns
    -------
    LabeledPass
        Every value (rows, width), ``z_log_det`` (rows,).
    """
    cls = nets.classifier(x, noise["labeled/gumbel_uniform"])
    enc = nets.encoder(x, y, noise["labeled/gaussian_eps"])
    dec = nets.decoder(y, enc.z, noise["labeled/bernoulli_uniform"])
    return LabeledPass(**_classified(cls), y_sample=cls.sample, **_encoded(enc), x_mean=dec.mean, x_sample=dec.sample)


def unlabeled_pass(nets, x, noise):
    """Forward pass of an unlabeled batch, x -> y~ -> z -> decoder mean: :class:`UnlabeledPass`.

    Parameters
    ----------
    nets : Networks
        The shared networks (:class:`untapped.paper.networks.Networks`).
    x : TensorVariable, (rows, n_features)
        The unlabeled images.
    noise : mapping of str to TensorVariable
        The noise by :func:`~untapped.paper.samplers.noise_key`; uses ``unlabeled/gumbel_uniform``
        (rows, n_classes) and ``unlabeled/gaussian_eps`` (rows, n_latent).

    Returns
    -------
    UnlabeledPass
        Every value (rows, width), ``z_log_det`` (rows,).
    """
    cls = nets.classifier(x, noise["unlabeled/gumbel_uniform"])
    enc = nets.encoder(x, cls.sample, noise["unlabeled/gaussian_eps"])
    dec = nets.decoder(cls.sample, enc.z)
    return UnlabeledPass(**_classified(cls), y_sample=cls.sample, **_encoded(enc), x_mean=dec.mean)


def unfeatured_pass(nets, y, z, noise, encode_generated=False):
    """Reverse pass of unfeatured (y, z), decode x^ ~ p(x|y,z) then classify x^: :class:`UnfeaturedPass`.

    With ``encode_generated`` (eq. 17 as printed) the encoder is also applied to
    (x^, y), and the observed z is mapped back through the flow to score it.

    Parameters
    ----------
    nets : Networks
        The shared networks (:class:`untapped.paper.networks.Networks`).
    y : TensorVariable, (rows, n_classes)
        The unfeatured labels.
    z : TensorVariable, (rows, n_latent)
        The observed latent codes, in the flow's box.
    noise : mapping of str to TensorVariable
        The noise by :func:`~untapped.paper.samplers.noise_key`; uses
        ``unfeatured/bernoulli_uniform`` (rows, n_features).
    encode_generated : bool, optional
        Also encode (x^, y) deterministically (eq. 17 as printed); default ``False``, as the original codes it.

    Returns
    -------
    UnfeaturedPass
        Every value (rows, width), ``z_log_det`` (rows,); the ``z_*`` fields ``None``
        unless ``encode_generated``.
    """
    dec = nets.decoder(y, z, noise["unfeatured/bernoulli_uniform"])
    values = unfeatured_values(nets, y, z, dec.mean, dec.sample, encode_generated)
    return values


def unfeatured_values(nets, y, z, x_mean, x_sample, encode_generated=False):
    """The rest of the reverse pass from its decoder's mean and sample x^: q(y|x^) and, for eq. 17, q(z|x^,y).

    Parameters
    ----------
    nets : Networks
        The shared networks (:class:`untapped.paper.networks.Networks`).
    y : TensorVariable, (rows, n_classes)
        The unfeatured labels.
    z : TensorVariable, (rows, n_latent)
        The observed latent codes.
    x_mean : TensorVariable, (rows, n_features)
        The decoder's Bernoulli mean b(y, z).
    x_sample : TensorVariable, (rows, n_features)
        Its sample x^.
    encode_generated : bool, optional
        As for :func:`unfeatured_pass`.

    Returns
    -------
    UnfeaturedPass
        As for :func:`unfeatured_pass`.
    """
    cls = nets.classifier(x_sample)
    if not encode_generated:
        return UnfeaturedPass(**_classified(cls), x_mean=x_mean, x_sample=x_sample)
    enc = nets.encoder(x_sample, y, deterministic=True)
    z_tilde = nets.encoder.flow.inverse(z)
    return UnfeaturedPass(
        **_classified(cls),
        x_mean=x_mean,
        x_sample=x_sample,
        z_mean=enc.mean,
        z_std=enc.std,
        z_tilde=z_tilde,
        z_log_det=nets.encoder.flow.log_det_jacobian(z_tilde),
    )
