"""The edge section (``docs/reference_format.md`` §7.7-7.8): inputs and parameters that reach every guard of the math.

A small batch at the initial parameters reaches few of the clips and
epsilons of the math, so the bundle repeats the forward pass, the terms and
the gradients at parameters, inputs and noise chosen to reach them
(:func:`edge_params`, :func:`edge_inputs`), and adds three updates by given
gradients that take each branch of the rescale and clip
(:func:`edge_update_gradients`).
"""

import math
from collections import OrderedDict

import numpy as np

from untapped.reference.inputs import Z_DRAW_HIGH, Z_DRAW_LOW, draw_noise

#: Rows of each source in ``edge/``, whatever ``rows`` is: one per unfeatured corner.
EDGE_ROWS = 10
#: ``classifier/logits/b[c] = -EDGE_LOGIT_STEP * c``: the classes' probabilities span e^-27.
EDGE_LOGIT_STEP = 3.0
#: ``classifier/logits/W`` is scaled by this, so the bias, not the image, sets the logits.
EDGE_LOGIT_WEIGHT_SCALE = 0.1
#: ``encoder/std/b``: z_std is softplus(-20) = 2.1e-9 in latent dimension 0 (far below the 1e-5 of log N),
#: softplus(30) = 30 in dimension 1.
EDGE_STD_BIAS = (-20.0, 30.0)
#: ``decoder/mean/b`` is -25 on pixels j % 4 == 0 and +25 on j % 4 == 1: means far beyond both clips.
EDGE_DECODER_BIAS = 25.0
#: Gumbel uniforms: 0.99 boosts class 0 (g = 4.60); 0 hits the inner guard (g = -log(-log(1e-4) + 1e-4)).
EDGE_GUMBEL_HIGH, EDGE_GUMBEL_LOW = 0.99, 0.0
#: Gaussian eps of latent dimension 1: in rows 0-4 |z~| >= 24, where s (1 - s) < 1e-10 is lost in the 1e-5
#: of the log-det; in rows 5-9 |z~| <= 5, where float32 still resolves 1 - s. The large z~ comes from the
#: standard deviation, not from eps: the gradient of log N with respect to z_std is the difference of two
#: terms of size eps^2 / z_std, which float32 leaves about 1e-7 of, and with eps = 9 and z_std = 3 they were
#: hundreds of times the gradient itself, beyond its tolerance (docs/reference_format.md §6.2).
EDGE_EPS = (1.0, -1.0, 1.0, -1.0, 1.0, -0.02, -0.01, 0.0, 0.01, 0.02)
#: The update cases (§7.8): the total norm of the given gradient and the entry at classifier/hidden1/W[0, 0].
EDGE_UPDATES = OrderedDict(
    rescaled=(50.0, 400.0),  # norm 403 > max_norm: rescaled, and the spike, 4.96 after it, clipped to 1
    not_rescaled=(2.0, 2.0),  # norm 2.83 < max_norm: kept, and the spike clipped to 1
    tiny=(1e-7, None),  # norm 1e-7 = norm_epsilon: the rescale multiplies by 1/2
)
EDGE_SPIKE_PARAM = "classifier/hidden1/W"


def edge_params(initial):
    """The edge parameters: ``initial`` (name -> array) with the changes of §7.7, float32."""
    from untapped import data

    out = OrderedDict((k, np.array(v, dtype=np.float32)) for k, v in initial.items())
    out["classifier/logits/W"] = out["classifier/logits/W"] * np.float32(EDGE_LOGIT_WEIGHT_SCALE)
    out["classifier/logits/b"] = (-EDGE_LOGIT_STEP * np.arange(data.NUM_CLASSES)).astype(np.float32)
    out["encoder/std/b"] = np.array(EDGE_STD_BIAS, dtype=np.float32)
    pixel = np.arange(out["decoder/mean/b"].shape[0])
    bias = np.where(pixel % 4 == 0, -EDGE_DECODER_BIAS, np.where(pixel % 4 == 1, EDGE_DECODER_BIAS, 0.0))
    out["decoder/mean/b"] = bias.astype(np.float32)
    return out


def edge_inputs(rng, dims):
    """The edge batch and its raw noise, drawn from ``rng`` in the order of §7.7, then set where it says.

    ``unfeatured_z = rng.uniform(-1.5, 1.5, (10, 2))``; ``labeled_x``, then
    ``unlabeled_x``, ``= rng.random((10, 784)) < 0.5``; labeled digits 0-4
    twice; unfeatured corners 0-9; then one noise set as :func:`draw_noise`,
    with the Gumbel uniforms of class 0 set to 0.99, those of the labeled
    class (when it is not 0) and of the unlabeled class 9 set to 0, and the
    Gaussian eps of latent dimension 1 set to :data:`EDGE_EPS` (1, -1, 1, -1,
    1, -0.02, -0.01, 0, 0.01, 0.02). The Bernoulli uniforms still have to be
    separated (§4.2).
    """
    from untapped import data

    rows = EDGE_ROWS
    one_hot = np.eye(data.NUM_CLASSES, dtype=np.float32)
    digits = np.arange(rows) % len(data.LABELED_DIGITS)
    unfeatured_z = rng.uniform(Z_DRAW_LOW, Z_DRAW_HIGH, size=(rows, 2)).astype(np.float32)
    labeled_x = (rng.random((rows, data.NUM_PIXELS)) < 0.5).astype(np.float32)
    unlabeled_x = (rng.random((rows, data.NUM_PIXELS)) < 0.5).astype(np.float32)
    batch = OrderedDict(
        labeled_x=labeled_x,
        labeled_y=one_hot[digits],
        unlabeled_x=unlabeled_x,
        unfeatured_y=data.close_corners()[np.arange(rows) % data.NUM_CLASSES],
        unfeatured_z=unfeatured_z,
    )
    return batch, _edge_noise(rng, digits, dims)


def _edge_noise(rng, digits, dims):
    """One noise set for the edge rows of labeled ``digits``, with the Gumbel uniforms and eps of §7.7 set."""
    noise = draw_noise(rng, len(digits), dims)
    labeled, unlabeled = noise["labeled/gumbel_uniform"], noise["unlabeled/gumbel_uniform"]
    labeled[:, 0] = unlabeled[:, 0] = EDGE_GUMBEL_HIGH
    hit = digits != 0
    labeled[np.flatnonzero(hit), digits[hit]] = EDGE_GUMBEL_LOW
    unlabeled[:, -1] = EDGE_GUMBEL_LOW
    for source in ("labeled", "unlabeled"):
        noise[f"{source}/gaussian_eps"][:, 1] = EDGE_EPS
    return noise


def edge_update_gradients(rng, initial):
    """``case -> (name -> gradient)`` for the update cases of :data:`EDGE_UPDATES`, drawn from ``rng``.

    Per case, in order, one ``rng.standard_normal(shape, dtype=float32)`` per
    parameter (in Lasagne's order), scaled in float64 to the case's total
    norm and cast to float32; then the spike, if any, replaces
    ``classifier/hidden1/W[0, 0]``.
    """
    out = OrderedDict()
    for case, (norm, spike) in EDGE_UPDATES.items():
        draws = OrderedDict((k, rng.standard_normal(np.shape(v), dtype=np.float32)) for k, v in initial.items())
        total = math.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in draws.values()))
        grads = OrderedDict((k, (d.astype(np.float64) * (norm / total)).astype(np.float32)) for k, d in draws.items())
        if spike is not None:
            grads[EDGE_SPIKE_PARAM][0, 0] = spike
        out[case] = grads
    return out
