"""How each data source flows through the shared networks (paper Alg. 1).

Three sources, three passes, exactly as the original wires them
(``original_code.md`` §3, with eq_samples = iw_samples = 1):

- labeled (x_n, y_n): the classifier gives a Concrete sample y~_n (for the
  x->y loss); the encoder, fed the one-hot y_n, gives z_n; the decoder, fed
  (y_n, z_n), gives the Bernoulli mean and a sample x^_n (for the y->x loss).
  One z_n serves both the labeled bound and the y->x loss.
- unlabeled x_m: y~_m from the classifier feeds both the encoder and the
  decoder; z_m from the encoder feeds the decoder.
- unfeatured (y_k, z_k): the decoder generates x^_k from the observed pair;
  the classifier scores x^_k. The paper's eq. 17 variant also encodes
  (x^_k, y_k) to score the observed z_k.

Every random draw is a named noise tensor (:data:`NOISE`), so the passes are
pure functions of data, parameters and noise.
"""

from collections import OrderedDict, namedtuple

import pytensor.tensor as pt
from pytensor.tensor.special import softmax

NoiseSpec = namedtuple("NoiseSpec", "source name distribution width")
NoiseSpec.__doc__ = """One noise array: ``distribution`` is 'uniform' (U(0,1)) or 'normal'
(N(0,1)); its shape is (rows of ``source`` in the batch, ``width``), where
``width`` names a model dimension: 'n_classes', 'n_latent' or 'n_features'."""

#: Every noise array the graph consumes, in the order a port should draw them.
NOISE = (
    NoiseSpec("labeled", "gumbel_uniform", "uniform", "n_classes"),
    NoiseSpec("labeled", "gaussian_eps", "normal", "n_latent"),
    NoiseSpec("labeled", "bernoulli_uniform", "uniform", "n_features"),
    NoiseSpec("unlabeled", "gumbel_uniform", "uniform", "n_classes"),
    NoiseSpec("unlabeled", "gaussian_eps", "normal", "n_latent"),
    NoiseSpec("unfeatured", "bernoulli_uniform", "uniform", "n_features"),
)

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


def noise_key(spec):
    return f"{spec.source}/{spec.name}"


def labeled_pass(nets, x, y, noise):
    """Forward pass of a labeled batch (x, one-hot y) through all three networks."""
    cls = nets.classifier(x, noise["labeled/gumbel_uniform"])
    enc = nets.encoder(x, y, noise["labeled/gaussian_eps"])
    dec = nets.decoder(y, enc["z"], noise["labeled/bernoulli_uniform"])
    return _intermediates(cls, enc, dec)


def unlabeled_pass(nets, x, noise):
    """Forward pass of an unlabeled batch: x -> y~ -> z -> decoder mean."""
    cls = nets.classifier(x, noise["unlabeled/gumbel_uniform"])
    enc = nets.encoder(x, cls["sample"], noise["unlabeled/gaussian_eps"])
    dec = nets.decoder(cls["sample"], enc["z"])
    return _intermediates(cls, enc, dec)


def unfeatured_pass(nets, y, z, noise, encode_generated=False, distinct=None):
    """Reverse pass of unfeatured (y, z): decode x^ ~ p(x|y,z), then classify x^.

    With ``encode_generated`` (eq. 17 as printed) the encoder is also applied to
    (x^, y), and the observed z is mapped back through the flow to score it.

    ``distinct``, optional: ``(y_distinct, z_distinct, rows)`` with
    ``y = y_distinct[rows]`` and ``z = z_distinct[rows]``. The decoder then
    runs once per distinct pair (see :class:`untapped.networks.Decoder`);
    the values are the same.
    """
    uniform = noise["unfeatured/bernoulli_uniform"]
    if distinct is None:
        dec = nets.decoder(y, z, uniform)
    else:
        y_distinct, z_distinct, rows = distinct
        dec = nets.decoder(y_distinct, z_distinct, uniform, rows=rows)
    cls = nets.classifier(dec["sample"])
    out = _intermediates(cls, None, dec)
    if encode_generated:
        enc = nets.encoder(dec["sample"], y, deterministic=True)
        out["z_mean"], out["z_std"] = enc["mean"], enc["std"]
        out["z_tilde"] = nets.encoder.flow.inverse(z)
        out["z_log_det"] = nets.encoder.flow.log_det_jacobian(out["z_tilde"])
    return out


def _intermediates(cls, enc, dec):
    out = OrderedDict(logits=cls["logits"], y_probs=softmax(cls["logits"], axis=-1))
    if "sample" in cls:
        out["y_sample"] = cls["sample"]
    if enc is not None:
        out.update(z_mean=enc["mean"], z_std=enc["std"], z_tilde=enc["z_tilde"], z=enc["z"], z_log_det=enc["log_det"])
    out["x_mean"] = dec["mean"]
    if "sample" in dec:
        out["x_sample"] = dec["sample"]
    return out


def symbolic_batch():
    """Symbolic float matrices for the five batch arrays, named as :data:`BATCH`."""
    return OrderedDict((name, pt.matrix(name)) for name in BATCH)


def symbolic_noise():
    """Symbolic float matrices for every noise array, keyed ``source/name``."""
    return OrderedDict((noise_key(spec), pt.matrix(noise_key(spec))) for spec in NOISE)
