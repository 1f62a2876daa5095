"""Reference bundles: what untapped computes, array by array, for ports to check against.

A *bundle* is an HDF5 file holding a small fixed batch, every noise array the
graph consumes, the initial parameters, every intermediate of the forward
pass, the five terms and the total, the gradient of the total for every
parameter, and the parameters and Adam state after a few optimiser steps, each
step with its own given noise. Every dataset carries the tolerance a port is
held to. The format is specified in ``docs/reference_format.md`` (written so
that a bundle can be produced from another framework without reading this
code); :data:`FORMAT_VERSION` is its version.

Command line (``untapped-reference`` or ``python -m untapped.reference``)::

    untapped-reference export OUT.h5 [--model untapped|m2] [--seed S] [--rows N] [--steps K]
    untapped-reference compare EXPECTED.h5 ACTUAL.h5 [--json] [--failures]
    untapped-reference describe FILE.h5

Exit status: 0 success (``compare``: every dataset within tolerance), 1
``compare`` found a difference (or a missing, extra, misshapen or mistyped
dataset), 2 an error (bad option, unreadable file, not a bundle, another
format version), reported as one ``error: ...`` line.

How the numbers are made (:func:`export`):

- the values come from the same symbolic graph as training
  (:class:`untapped.model.ModelGraph`), compiled with the noise as ordinary
  inputs (``design.md`` §3); one function gives the forward trace and the
  gradients, another the training update together with the gradients it
  applies, so ``/steps/<k>/gradients`` are exactly those the update used;
- inputs: MNIST rows when MNIST is found (never downloaded unless asked),
  else a documented synthetic batch (:func:`make_inputs`);
- noise: drawn from the seed (:func:`draw_noise`), then the Bernoulli
  uniforms are moved at least :data:`BERNOULLI_MARGIN` away from the decoder
  means they are compared with (:func:`separate_bernoulli_uniforms`), so that
  no float32 port can flip a sample by rounding;
- the edge section (format §7.7-7.8): the same forward pass, terms and
  gradients at parameters, inputs and noise chosen to reach every clip and
  epsilon of the math (:func:`edge_params`, :func:`edge_inputs`), and three
  updates by given gradients that take each branch of the rescale and clip
  (:func:`edge_update_gradients`, applied by the model's own update graph).
"""

import json
import math
import os
import pathlib
import sys
from collections import OrderedDict

import click
import h5py
import numpy as np
from untapped.files import atomic_output, jsonable, one_line

FORMAT = "untapped-reference"
FORMAT_VERSION = 2
#: Versions this code reads: version 1 is version 2 without the ``edge/`` section.
READABLE_VERSIONS = (1, 2)
MODELS = ("untapped", "m2")
INPUT_SOURCES = ("auto", "mnist", "synthetic")
DEFAULT_SEED = 1234
DEFAULT_ROWS = 16
DEFAULT_STEPS = 2
MAX_ROWS = 10_000

#: Bernoulli uniforms closer than this to their decoder mean are moved to this distance.
BERNOULLI_MARGIN = 1e-3
#: Probability of a lit pixel in the synthetic batch (MNIST's binarised rate is 13.1%).
SYNTHETIC_PIXEL_RATE = 0.13
#: The box from which the unfeatured z are drawn (the original's ``z2``).
Z_DRAW_LOW, Z_DRAW_HIGH = -1.5, 1.5
#: Lasagne's ``total_norm_constraint`` epsilon (fixed in the original).
NORM_EPSILON = 1e-7

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2

# ---------------------------------------------------------------------------
# Tolerance policy

#: kind -> (rtol, atol, atol is a multiple of max|expected|, required in ACTUAL).
#:
#: A value passes when ``|actual - expected| <= atol + rtol * |expected|``,
#: entry by entry (NaN equals NaN; infinities must match exactly).
TOLERANCES = OrderedDict(
    # Data a port reads: optional in a port's bundle, exact when present.
    given=(0.0, 0.0, False, False),
    # Bernoulli samples: exact. The noise keeps every uniform >= BERNOULLI_MARGIN
    # from its mean, so only a wrong mean (not rounding) can flip a sample.
    sample=(0.0, 0.0, False, True),
    # Adam's step count.
    counter=(0.0, 0.0, False, True),
    # Forward intermediates: float32 reassociation. Entries near zero come out of
    # cancellations of O(max) operands, hence an absolute part scaled by the array.
    forward=(1e-5, 1e-5, True, True),
    # The five terms, the total, and each step's total.
    loss=(1e-5, 1e-5, False, True),
    # Gradients: longer chains of float32 rounding, cancellation within sums.
    gradient=(1e-4, 1e-5, True, True),
    # Parameters after optimiser steps.
    param=(1e-4, 1e-5, False, True),
    # Adam's moments: m is linear in the gradient, v quadratic (a float64
    # ``1 - beta2`` instead of §7.6's float32 one alone moves v by 1.3e-5 relative).
    moment=(1e-4, 1e-5, True, True),
)
#: The smallest absolute tolerance of the scaled kinds (for all-zero arrays).
ATOL_FLOOR = 1e-12


class ReferenceError(Exception):
    """A bundle that cannot be written, read or compared; the message is one line."""


def kind_of(name):
    """The tolerance kind (a key of :data:`TOLERANCES`) of the dataset ``name``, or None if unknown.

    ``edge/<name>`` has the kind of ``<name>`` (§7.7), except the given
    ``edge/params/`` and ``edge/updates/<case>/gradients/``; an update case's
    ``params`` and ``adam`` are those of an optimiser step (§7.8).
    """
    parts = name.split("/")
    top = parts[0]
    if top == "edge":
        if name == "edge/total":
            return "loss"
        section = parts[1] if len(parts) >= 3 else None
        if section == "params":
            return "given"
        if section == "updates" and len(parts) >= 5:
            if parts[3] == "gradients":
                return "given"
            return kind_of("/".join(["steps", "k"] + parts[3:])) if parts[3] in ("params", "adam") else None
        if section in ("inputs", "noise", "forward", "terms", "gradients"):
            return kind_of("/".join(parts[1:]))
        return None
    if top in ("inputs", "noise") or name.startswith("params/initial/"):
        return "given"
    if top == "forward" and len(parts) == 3:
        return "sample" if parts[2] == "x_sample" else "forward"
    if top == "terms" or name == "total":
        return "loss"
    if top == "gradients":
        return "gradient"
    if top == "steps" and len(parts) >= 3:
        section = parts[2]
        if section == "noise":
            return "given"
        if section == "total" and len(parts) == 3:
            return "loss"
        if section == "gradients":
            return "gradient"
        if section == "params":
            return "param"
        if section == "adam":
            if parts[3:] == ["t"]:
                return "counter"
            if len(parts) > 4 and parts[3] in ("m", "v"):
                return "moment"
    return None


def tolerance(name, expected):
    """``{'kind', 'rtol', 'atol', 'required'}`` for dataset ``name`` with expected values ``expected``."""
    kind = kind_of(name)
    if kind is None:
        raise ReferenceError(f"{name}: not a dataset of the reference format")
    rtol, atol, scaled, required = TOLERANCES[kind]
    if scaled:
        values = np.abs(np.asarray(expected, dtype=np.float64))
        finite = values[np.isfinite(values)]
        atol = max(ATOL_FLOOR, atol * float(finite.max())) if finite.size else ATOL_FLOOR
    return dict(kind=kind, rtol=float(rtol), atol=float(atol), required=int(required))


# ---------------------------------------------------------------------------
# Inputs and noise


def _generators(seed):
    """The three generators of a bundle: ``(inputs, noise, edge)``, from ``SeedSequence(seed).spawn(3)``.

    A child depends only on its position, so the first two are those of
    ``spawn(2)`` (format version 1 had only these).
    """
    return tuple(np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3))


def make_inputs(rng, rows, source="auto", data_dir=None, download=False):
    """The fixed batch: ``(batch, info)``, ``batch`` in :data:`untapped.forward.BATCH` order.

    Draws from ``rng`` (the inputs generator), in this order:

    1. ``unfeatured_z = rng.uniform(-1.5, 1.5, size=(rows, 2))`` (float64, then float32);
    2. MNIST: ``labeled_index = rng.choice(<rows of digits 0-4>, rows, replace=False)``,
       then ``unlabeled_index = rng.choice(70000, rows, replace=False)``, rows of
       the binarised 70,000-image stack of :mod:`untapped.data`;
       synthetic: ``labeled_x = rng.random((rows, 784)) < 0.13``, then
       ``unlabeled_x = rng.random((rows, 784)) < 0.13``, and labeled digits
       ``0, 1, 2, 3, 4, 0, 1, ...``.

    ``labeled_y`` is one-hot; ``unfeatured_y`` row k is close corner ``k % 10``
    (0.95 on the diagonal). ``source`` is 'mnist', 'synthetic' or 'auto'
    (MNIST if :func:`untapped.data.find_mnist` finds it without downloading,
    unless ``download``; an explicit ``data_dir`` or ``UNTAPPED_DATA_DIR``
    that does not hold MNIST is an error, not a fallback).
    """
    from untapped import data

    if source not in INPUT_SOURCES:
        raise ReferenceError(f"inputs must be one of {', '.join(INPUT_SOURCES)}, not {source!r}")
    one_hot = np.eye(data.NUM_CLASSES, dtype=np.float32)
    unfeatured_y = data.close_corners()[np.arange(rows) % data.NUM_CLASSES]
    unfeatured_z = rng.uniform(Z_DRAW_LOW, Z_DRAW_HIGH, size=(rows, 2)).astype(np.float32)
    images = None
    info = OrderedDict()
    if source in ("auto", "mnist"):
        explicit = data_dir is not None or bool(os.environ.get(data.ENV_VAR))
        try:
            location = data.find_mnist(data_dir, download=download)
            images, digits = data.load_binarized_mnist(location, download=False)
        except data.DataError as exc:
            if source == "mnist" or explicit:
                raise ReferenceError(f"MNIST inputs: {one_line(exc)}") from None
            info["note"] = (f"MNIST not found (looked in the user cache {data.default_cache_dir()}; "
                            "no download without --download)")
        else:
            info["location"], info["found_by"] = str(location), _found_by(location, data_dir)
    if images is not None:
        pool = np.flatnonzero(np.isin(digits, data.LABELED_DIGITS))
        if rows > len(pool):
            raise ReferenceError(f"--rows {rows} exceeds the {len(pool)} labeled MNIST images")
        labeled_index = rng.choice(pool, size=rows, replace=False)
        unlabeled_index = rng.choice(len(images), size=rows, replace=False)
        labeled_digits = digits[labeled_index]
        batch = OrderedDict(
            labeled_x=images[labeled_index],
            labeled_y=one_hot[labeled_digits],
            unlabeled_x=images[unlabeled_index],
        )
        info.update(source="mnist", labeled_index=labeled_index, unlabeled_index=unlabeled_index)
    else:
        labeled_digits = np.arange(rows) % len(data.LABELED_DIGITS)
        batch = OrderedDict(
            labeled_x=(rng.random((rows, data.NUM_PIXELS)) < SYNTHETIC_PIXEL_RATE).astype(np.float32),
            labeled_y=one_hot[labeled_digits],
            unlabeled_x=(rng.random((rows, data.NUM_PIXELS)) < SYNTHETIC_PIXEL_RATE).astype(np.float32),
        )
        info["source"] = "synthetic"
    info["labeled_digits"] = np.asarray(labeled_digits, dtype=np.int64)
    batch.update(unfeatured_y=unfeatured_y, unfeatured_z=unfeatured_z)
    return OrderedDict((k, np.ascontiguousarray(v, dtype=np.float32)) for k, v in batch.items()), info


def _found_by(location, data_dir):
    """How :func:`untapped.data.find_mnist` came to ``location``: '--data-dir', the variable, or the cache."""
    from untapped import data

    cache = data.default_cache_dir().resolve()
    if cache == pathlib.Path(location).resolve() or cache in pathlib.Path(location).resolve().parents:
        return "the user cache"
    return "--data-dir" if data_dir is not None else data.ENV_VAR


def inputs_line(info):
    """One line saying which inputs a bundle holds and where they came from."""
    if info["source"] == "mnist":
        return f"inputs: MNIST from {info['location']} (found by {info['found_by']})"
    return f"inputs: the synthetic batch ({info['note']})" if info.get("note") else "inputs: the synthetic batch"


def check_writable(path):
    """Raise :class:`ReferenceError` unless a file can be created beside ``path`` (before any computing)."""
    import tempfile

    path = pathlib.Path(path)
    parent = path.parent
    if path.is_dir():
        raise ReferenceError(f"{path}: is a folder; give the bundle's file name")
    if not parent.is_dir():
        raise ReferenceError(f"{path}: cannot write there: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise ReferenceError(f"{path}: cannot write there ({one_line(exc)})") from None
    os.close(fd)
    os.unlink(probe)


def noise_specs(rows, dims):
    """``[(key, distribution, shape)]`` of every noise array, in :data:`untapped.forward.NOISE` order."""
    from untapped import forward

    return [(forward.noise_key(s), s.distribution, (rows, dims[s.width])) for s in forward.NOISE]


def draw_noise(rng, rows, dims):
    """One set of noise arrays from ``rng``, in :data:`untapped.forward.NOISE` order.

    Uniforms: ``rng.random(shape, dtype=np.float32)`` (float32 in [0, 1));
    normals: ``rng.standard_normal(shape, dtype=np.float32)``.
    """
    out = OrderedDict()
    for key, distribution, shape in noise_specs(rows, dims):
        if distribution == "uniform":
            out[key] = rng.random(shape, dtype=np.float32)
        else:
            out[key] = rng.standard_normal(shape, dtype=np.float32)
    return out


def separate_bernoulli_uniforms(noise, means, margin=BERNOULLI_MARGIN):
    """``(noise, moved)``: a copy whose Bernoulli uniforms are >= ``margin`` from the decoder means.

    ``means`` maps ``<source>/x_mean`` to the decoder means the uniforms are
    compared with (``x^ = 1[u < mean]``). A uniform closer than ``margin`` is
    moved to ``mean - margin`` if it was below the mean, else ``mean + margin``,
    keeping the sample's value, unless that leaves [0, 1), in which case it
    goes to the other side. ``moved`` counts the moved entries per array.
    """
    out, moved = OrderedDict(noise), OrderedDict()
    for key in noise:
        source, name = key.split("/")
        if name != "bernoulli_uniform":
            continue
        u = np.asarray(noise[key], dtype=np.float64)
        mean = np.asarray(means[f"{source}/x_mean"], dtype=np.float64)
        close = np.abs(u - mean) < margin
        below, above = mean - margin, mean + margin
        below_ok, above_ok = below >= 0.0, above < 1.0 - 1e-6
        target = np.where(u < mean, np.where(below_ok, below, above), np.where(above_ok, above, below))
        out[key] = np.where(close, target, u).astype(np.float32)
        moved[key] = int(close.sum())
    return out, moved


# ---------------------------------------------------------------------------
# The edge section: inputs and parameters that reach every guard of the math (§7.7, §7.8)

#: Rows of each source in ``edge/``, whatever ``rows`` is: one per unfeatured corner.
EDGE_ROWS = 10
#: ``classifier/logits/b[c] = -EDGE_LOGIT_STEP * c``: the classes' probabilities span e^-27.
EDGE_LOGIT_STEP = 3.0
#: ``classifier/logits/W`` is scaled by this, so the bias, not the image, sets the logits.
EDGE_LOGIT_WEIGHT_SCALE = 0.1
#: ``encoder/std/b``: z_std is softplus(-20) = 2.1e-9 in latent dimension 0 (far below the 1e-5 of log N),
#: softplus(3) = 3.05 in dimension 1.
EDGE_STD_BIAS = (-20.0, 3.0)
#: ``decoder/mean/b`` is -25 on pixels j % 4 == 0 and +25 on j % 4 == 1: means far beyond both clips.
EDGE_DECODER_BIAS = 25.0
#: Gumbel uniforms: 0.99 boosts class 0 (g = 4.60); 0 hits the inner guard (g = -log(-log(1e-4) + 1e-4)).
EDGE_GUMBEL_HIGH, EDGE_GUMBEL_LOW = 0.99, 0.0
#: Gaussian eps of latent dimension 1: in rows 0-4 |z~| >= 24, where s (1 - s) < 1e-10 is lost in the 1e-5
#: of the log-det; in rows 5-9 |z~| <= 5, where float32 still resolves 1 - s. (Not larger: the gradient of
#: log N cancels terms of size eps^2 / z_std, and float32 leaves that much times 6e-8.)
EDGE_EPS = (9.0, -9.0, 9.0, -9.0, 9.0, -1.0, -0.5, 0.0, 0.5, 1.0)
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
    Gaussian eps of latent dimension 1 set to :data:`EDGE_EPS` (9, -9, 9, -9,
    9, -1, -0.5, 0, 0.5, 1). The Bernoulli uniforms still have to be
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
    noise = draw_noise(rng, rows, dims)
    labeled, unlabeled = noise["labeled/gumbel_uniform"], noise["unlabeled/gumbel_uniform"]
    labeled[:, 0] = unlabeled[:, 0] = EDGE_GUMBEL_HIGH
    hit = digits != 0
    labeled[np.flatnonzero(hit), digits[hit]] = EDGE_GUMBEL_LOW
    unlabeled[:, -1] = EDGE_GUMBEL_LOW
    for source in ("labeled", "unlabeled"):
        noise[f"{source}/gaussian_eps"][:, 1] = EDGE_EPS
    return batch, noise


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


# ---------------------------------------------------------------------------
# Computing the reference values


class Exporter:
    """A model built from a preset and seed, with the two functions a bundle needs compiled.

    ``forward(batch, noise)`` gives the trace (as :meth:`SSDGM.trace`) and the
    gradient of the total for every parameter (as :meth:`SSDGM.total_gradients`);
    ``step(batch, noise, lr)`` applies the training update (as
    :meth:`SSDGM.step_with_noise`) and returns the total and the gradients that
    the update used. Both are compiled once from the model's own graph.
    """

    def __init__(self, model="untapped", seed=DEFAULT_SEED, mode="c"):
        import pytensor
        import pytensor.tensor as pt

        from untapped.backend import compiling
        from untapped.model import SSDGM

        if model not in MODELS:
            raise ReferenceError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
        self.name, self.seed, self.mode = model, seed, mode
        self.model = SSDGM.from_preset(model, seed=seed, mode=mode)
        graph = self.model.graph
        self.initial_params = OrderedDict((k, np.array(v)) for k, v in self.model.param_values_by_name().items())
        self.initial_state = OrderedDict((k, np.array(v)) for k, v in self.model.optimizer_state().items())
        self.param_names = list(graph.networks.param_names)
        self.trace_names = list(graph.trace_outputs)
        trace_vars = [v for out in graph.passes.values() for v in out.values()] + list(graph.terms.values()) + [graph.total]
        assert len(trace_vars) == len(self.trace_names)
        self._inputs = list(graph.batch.values()) + list(graph.noise.values())
        self._batch_names, self._noise_names = list(graph.batch), list(graph.noise)
        with compiling():
            self._forward = pytensor.function(
                self._inputs, trace_vars + list(graph.gradients), mode=graph.mode, on_unused_input="ignore"
            )
            self._step = pytensor.function(
                self._inputs + [graph.learning_rate],
                [graph.total] + list(graph.gradients),
                updates=graph.updates,
                mode=graph.mode,
                on_unused_input="ignore",
            )
            # The same update graph with its raw gradients replaced by inputs (§7.8's given gradients).
            given = [pt.tensor(dtype=g.dtype, shape=(None,) * g.ndim, name=f"given/{name}")
                     for g, name in zip(graph.gradients, self.param_names)]
            self._update = pytensor.function(
                given + [graph.learning_rate],
                [],
                updates=graph.updates,
                givens=list(zip(graph.gradients, given)),
                mode=graph.mode,
                on_unused_input="ignore",
            )

    @property
    def dims(self):
        return self.model.dims

    def reset(self):
        """Back to the initial parameters and a fresh Adam state."""
        self.model.set_param_values_by_name(self.initial_params)
        self.model.set_optimizer_state(self.initial_state)

    def _args(self, batch, noise):
        return [np.ascontiguousarray(batch[k], dtype=np.float32) for k in self._batch_names] + [
            np.ascontiguousarray(noise[k], dtype=np.float32) for k in self._noise_names
        ]

    def forward(self, batch, noise):
        values = self._forward(*self._args(batch, noise))
        n = len(self.trace_names)
        return OrderedDict(zip(self.trace_names, values[:n])), OrderedDict(zip(self.param_names, values[n:]))

    def update(self, gradients, learning_rate):
        """The training update applied to ``gradients`` (name -> raw gradient) from the current state."""
        self._update(*[np.ascontiguousarray(gradients[k], dtype=np.float32) for k in self.param_names],
                     np.float32(learning_rate))

    def step(self, batch, noise, learning_rate):
        values = self._step(*self._args(batch, noise), np.float32(learning_rate))
        return values[0], OrderedDict(zip(self.param_names, values[1:]))


_EXPORTERS = {}


def exporter(model="untapped", seed=DEFAULT_SEED, mode="c"):
    """The :class:`Exporter` for (model, seed, mode), compiled once per process."""
    key = (model, int(seed), mode)
    if key not in _EXPORTERS:
        _EXPORTERS[key] = Exporter(model, int(seed), mode)
    return _EXPORTERS[key]


def compute(model="untapped", seed=DEFAULT_SEED, rows=DEFAULT_ROWS, steps=DEFAULT_STEPS, inputs="auto", data_dir=None,
            download=False, mode="c"):
    """Every dataset of a bundle, in memory: ``(datasets, attrs, root_attrs, group_attrs, info)``.

    ``datasets`` maps a dataset name (``forward/labeled/logits``) to an array,
    ``attrs`` the same names to their attributes (tolerances, ``order``, ...);
    ``info`` describes the inputs (:func:`make_inputs`).
    """
    from untapped import __version__, forward
    from untapped.backend import environment

    if not 1 <= int(rows) <= MAX_ROWS:
        raise ReferenceError(f"rows must be between 1 and {MAX_ROWS}, not {rows}")
    if int(steps) < 0:
        raise ReferenceError(f"steps must be >= 0, not {steps}")
    rows, steps = int(rows), int(steps)
    inputs_rng, noise_rng, edge_rng = _generators(seed)
    batch, info = make_inputs(inputs_rng, rows, inputs, data_dir, download)
    ex = exporter(model, seed, mode)
    est = ex.model
    ex.reset()
    noise_sets = [draw_noise(noise_rng, rows, ex.dims) for _ in range(steps + 1)]

    datasets, attrs = OrderedDict(), OrderedDict()

    def put(name, value, **extra):
        datasets[name] = np.asarray(value)
        attrs[name] = dict(extra)

    for name, value in batch.items():
        put(f"inputs/{name}", value)
    order = {name: i for i, name in enumerate(ex.param_names)}
    noise_order = {forward.noise_key(s): (i, s.distribution) for i, s in enumerate(forward.NOISE)}

    def put_noise(prefix, noise, moved):
        for key, value in noise.items():
            i, distribution = noise_order[key]
            extra = dict(order=i, distribution=distribution)
            if key in moved:
                extra["moved"] = moved[key]
            put(f"{prefix}/{key}", value, **extra)

    # The forward pass, its terms and gradients at the initial parameters.
    trace, _ = ex.forward(batch, noise_sets[0])
    noise, moved = separate_bernoulli_uniforms(noise_sets[0], trace)
    trace, grads = ex.forward(batch, noise)
    put_noise("noise", noise, moved)
    for name, value in ex.initial_params.items():
        put(f"params/initial/{name}", value, order=order[name])
    for key, value in trace.items():
        put(key if key.startswith("terms/") or key == "total" else f"forward/{key}", value)
    for name, value in grads.items():
        put(f"gradients/{name}", value, order=order[name])

    # K optimiser steps, each with its own noise.
    learning_rate = float(est.learning_rate)
    for k in range(1, steps + 1):
        means, _ = ex.forward(batch, noise_sets[k])
        noise, moved = separate_bernoulli_uniforms(noise_sets[k], means)
        total, grads = ex.step(batch, noise, learning_rate)
        put_noise(f"steps/{k}/noise", noise, moved)
        put(f"steps/{k}/total", total)
        for name, value in grads.items():
            put(f"steps/{k}/gradients/{name}", value, order=order[name])
        for name, value in est.param_values_by_name().items():
            put(f"steps/{k}/params/{name}", value, order=order[name])
        for key, value in est.optimizer_state().items():
            param = key.split("/", 2)[2] if key.count("/") >= 2 else None
            put(f"steps/{k}/{key}", value, **({"order": order[param]} if param else {}))

    # The edge section (§7.7, §7.8): its own rows, parameters and noise, and three update cases.
    params_at_edge = edge_params(ex.initial_params)
    edge_batch, edge_noise = edge_inputs(edge_rng, ex.dims)
    est.set_param_values_by_name(params_at_edge)
    means, _ = ex.forward(edge_batch, edge_noise)
    edge_noise, moved = separate_bernoulli_uniforms(edge_noise, means)
    trace, grads = ex.forward(edge_batch, edge_noise)
    for name, value in edge_batch.items():
        put(f"edge/inputs/{name}", value)
    put_noise("edge/noise", edge_noise, moved)
    for name, value in params_at_edge.items():
        put(f"edge/params/{name}", value, order=order[name])
    for key, value in trace.items():
        put(f"edge/{key}" if key.startswith("terms/") or key == "total" else f"edge/forward/{key}", value)
    for name, value in grads.items():
        put(f"edge/gradients/{name}", value, order=order[name])
    for case, given in edge_update_gradients(edge_rng, ex.initial_params).items():
        ex.reset()
        ex.update(given, learning_rate)
        for name, value in given.items():
            put(f"edge/updates/{case}/gradients/{name}", value, order=order[name])
        for name, value in est.param_values_by_name().items():
            put(f"edge/updates/{case}/params/{name}", value, order=order[name])
        for key, value in est.optimizer_state().items():
            param = key.split("/", 2)[2] if key.count("/") >= 2 else None
            put(f"edge/updates/{case}/{key}", value, **({"order": order[param]} if param else {}))
    ex.reset()

    for name, value in datasets.items():
        tol = tolerance(name, value)
        attrs[name] = OrderedDict(**tol, **attrs[name])

    env = environment(mode)
    params = est.get_params()
    root = OrderedDict(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        producer=f"untapped {__version__}",
        model=model,
        seed=int(seed),
        rows=rows,
        steps=steps,
        learning_rate=learning_rate,
        inputs_source=info["source"],
        bernoulli_margin=BERNOULLI_MARGIN,
        coefficients=json.dumps(dict(est.coefficients)),
        optimizer=json.dumps(
            dict(
                max_norm=float(est.max_norm),
                norm_epsilon=NORM_EPSILON,
                clip_grad=float(est.clip_grad),
                beta1=float(est.adam_beta1),
                beta2=float(est.adam_beta2),
                epsilon=float(est.adam_epsilon),
            )
        ),
        config=json.dumps(jsonable(params), sort_keys=True),
        param_order=json.dumps(ex.param_names),
        versions=json.dumps(env["versions"], sort_keys=True),
        mode=mode,
        blas__ldflags=str(env["blas__ldflags"]),
        environment=json.dumps(env, sort_keys=True),
    )
    inputs_attrs = OrderedDict(source=info["source"], labeled_digits=info["labeled_digits"])
    if info["source"] == "mnist":
        inputs_attrs.update(labeled_index=info["labeled_index"], unlabeled_index=info["unlabeled_index"])
    group_attrs = {"inputs": inputs_attrs, "steps": OrderedDict(count=steps, learning_rate=learning_rate)}
    return datasets, attrs, root, group_attrs, info


def export(path, model="untapped", seed=DEFAULT_SEED, rows=DEFAULT_ROWS, steps=DEFAULT_STEPS, inputs="auto", data_dir=None,
           download=False, mode="c", overwrite=False):
    """Compute a bundle (:func:`compute`) and write it to ``path`` atomically; returns a summary dict."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise ReferenceError(f"{path} exists; pass --force to replace it")
    check_writable(path)
    datasets, attrs, root, group_attrs, info = compute(model, seed, rows, steps, inputs, data_dir, download, mode)
    write_bundle(path, datasets, attrs, root, group_attrs)
    return OrderedDict(
        path=str(path),
        datasets=len(datasets),
        inputs_source=info["source"],
        note=info.get("note"),
        inputs=inputs_line(info),
        total=float(datasets["total"]),
        steps=int(steps),
    )


def write_bundle(path, datasets, attrs=None, root=None, group_attrs=None):
    """Write ``datasets`` (name -> array) with their attributes to ``path`` (temporary file, then rename).

    Groups keep insertion order; no timestamps are stored, so two exports
    with the same arguments write the same bytes.
    """
    path = pathlib.Path(path)
    attrs, root, group_attrs = attrs or {}, root or {}, group_attrs or {}
    try:
        with atomic_output(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
            for key, value in root.items():
                f.attrs[key] = value
            for name, value in datasets.items():
                parent = _group(f, name.rsplit("/", 1)[0]) if "/" in name else f
                ds = parent.create_dataset(name.rsplit("/", 1)[-1], data=value, track_times=False, track_order=True)
                for key, v in attrs.get(name, {}).items():
                    ds.attrs[key] = v
            for name, values in group_attrs.items():
                if name in f:
                    for key, v in values.items():
                        f[name].attrs[key] = v
    except OSError as exc:
        raise ReferenceError(f"{path}: cannot write the bundle ({one_line(exc)})") from None
    return path


def _group(f, name):
    group = f
    for part in name.split("/"):
        group = group[part] if part in group else group.create_group(part, track_order=True)
    return group


# ---------------------------------------------------------------------------
# Reading


class Bundle:
    """An open bundle: root attributes and its items (datasets, and gradient entry groups)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.file = _open(self.path)
        try:
            self.attrs = {k: _attr_value(v) for k, v in self.file.attrs.items()}
            self.items = _items(self.file)
        except ReferenceError:
            self.file.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            self.file.close()
            raise ReferenceError(f"{self.path}: unreadable bundle ({one_line(exc)})") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def read(self, name):
        """The array of item ``name`` (for an entries group: ``(index, value)``)."""
        try:
            item = self.items[name]
            if isinstance(item, h5py.Group):
                return np.asarray(item["index"][()]), np.asarray(item["value"][()])
            return np.asarray(item[()])
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise ReferenceError(f"{self.path}: cannot read {name} ({one_line(exc)})") from None


def _open(path):
    if not path.exists():
        raise ReferenceError(f"{path}: no such file")
    if path.is_dir():
        raise ReferenceError(f"{path}: is a folder, not a bundle")
    try:
        is_hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise ReferenceError(f"{path}: cannot read ({one_line(exc)})") from None
    if not is_hdf5:
        raise ReferenceError(f"{path}: not an HDF5 file, so not a reference bundle")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ReferenceError(f"{path}: truncated or corrupt HDF5 file ({one_line(exc)})") from None
    fmt = _attr_value(f.attrs.get("format"))
    version = _attr_value(f.attrs.get("format_version"))
    if fmt != FORMAT:
        f.close()
        what = "no 'format' attribute" if fmt is None else f"format {fmt!r}"
        raise ReferenceError(f"{path}: an HDF5 file but not an untapped reference bundle ({what})")
    if version not in READABLE_VERSIONS:
        f.close()
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise ReferenceError(f"{path}: reference format version {version}; this untapped reads versions {readable}")
    return f


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _items(f):
    """Every dataset by name (no leading slash), with entry groups (attribute ``form='entries'``) as one item."""
    items = OrderedDict()

    def walk(group, prefix):
        for key, obj in group.items():
            name = f"{prefix}{key}"
            if isinstance(obj, h5py.Group):
                if _attr_value(obj.attrs.get("form")) == "entries":
                    items[name] = obj
                else:
                    walk(obj, name + "/")
            elif isinstance(obj, h5py.Dataset):
                items[name] = obj

    walk(f, "")
    return items


# ---------------------------------------------------------------------------
# Comparing


def _json_number(x):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _errors(actual, expected, rtol, atol):
    """``(max_abs, max_rel, used, mismatches, worst)`` of actual against expected (float64 arithmetic, §6.1).

    ``used`` is the largest ``|actual - expected| / (atol + rtol |expected|)``:
    the fraction of its tolerance the worst entry uses (> 1 fails). An entry
    that is NaN on one side only has error NaN, an infinity that does not
    match error inf; NaN counts as the worst, so ``max_abs`` and ``used`` are
    NaN if any such entry exists. ``worst`` is the flat index of the entry
    with the largest ``used`` (None when every entry agrees).
    """
    if actual.dtype == expected.dtype and actual.shape == expected.shape and actual.tobytes() == expected.tobytes():
        return 0.0, 0.0, 0.0, 0, None  # the same bits (the common case when comparing two exports)
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    allowed = atol + rtol * np.abs(e)
    with np.errstate(invalid="ignore"):
        err = np.abs(a - e)
    if atol > 0 and np.isfinite(err).all():  # the common case: no NaN, infinity or zero tolerance to rule on
        used = err / allowed
        bad = int((err > allowed).sum())
        rel = err[e != 0] / np.abs(e[e != 0])
        max_abs = float(err.max()) if err.size else 0.0
        max_rel = float(rel.max()) if rel.size else (0.0 if max_abs == 0 else math.inf)
        worst = int(np.argmax(used)) if max_abs > 0 else None
        return max_abs, max_rel, float(used.max()) if used.size else 0.0, bad, worst
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        agree = (a == e) | (np.isnan(a) & np.isnan(e))
        err = np.where(agree, 0.0, np.abs(a - e))
        # NaN on one side only: NaN; inf against a finite number or the other inf: inf
        err = np.where(~agree & (np.isnan(a) | np.isnan(e)), np.nan, np.where(~agree & np.isnan(err), np.inf, err))
        bad = ~agree & ~(err <= allowed)
        used = np.where(err == 0, 0.0, err / np.where(allowed > 0, allowed, 1.0))
        used = np.where((err > 0) & ~(allowed > 0), np.inf, used)
        nonzero = (e != 0) & np.isfinite(e)
        rel = err[nonzero] / np.abs(e[nonzero])
    nan = np.isnan(err)
    if not err.size or not bad.any() and not used.any():
        worst = None
    else:
        worst = int(np.flatnonzero(nan)[0]) if nan.any() else int(np.argmax(used))
    if nan.any():
        return math.nan, math.nan, math.nan, int(bad.sum()), worst
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = float(rel.max()) if rel.size else (0.0 if max_abs == 0 else math.inf)
    return max_abs, max_rel, float(used.max()) if used.size else 0.0, int(bad.sum()), worst


def _worst(row, worst, index, expected, actual):
    """Add the worst entry to ``row``: its index in EXPECTED's array and both values."""
    if worst is None:
        return
    row.update(worst_index=[int(i) for i in index], worst_expected=float(expected[worst]),
               worst_actual=float(actual[worst]))


def _compare_item(name, expected_bundle, actual_bundle):
    e_item, a_item = expected_bundle.items[name], actual_bundle.items[name]
    row = OrderedDict(name=name)
    if isinstance(e_item, h5py.Group):
        raise ReferenceError(f"{expected_bundle.path}: {name} is a group of entries; EXPECTED must hold full arrays "
                             "(are EXPECTED and ACTUAL swapped? untapped's bundle comes first)")
    expected = expected_bundle.read(name)
    tol = _stored_tolerance(e_item, name, expected)
    row.update(kind=tol["kind"], rtol=tol["rtol"], atol=tol["atol"])
    row.update(shape=list(expected.shape), dtype=str(expected.dtype), size=int(expected.size))
    if isinstance(a_item, h5py.Group):
        return _compare_entries(row, name, expected, actual_bundle, tol)
    actual = actual_bundle.read(name)
    row.update(actual_shape=list(actual.shape), actual_dtype=str(actual.dtype))
    if actual.shape != expected.shape:
        return dict(row, status="fail", reason=f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if not _same_dtype(actual.dtype, expected.dtype):
        return dict(row, status="fail", reason=f"dtype {actual.dtype}, expected {expected.dtype}")
    max_abs, max_rel, used, bad, worst = _errors(actual, expected, tol["rtol"], tol["atol"])
    row.update(max_abs_error=max_abs, max_rel_error=max_rel, tolerance_used=used, mismatches=bad, checked=int(expected.size))
    if worst is not None:
        _worst(row, worst, np.unravel_index(worst, expected.shape), expected.reshape(-1), actual.reshape(-1))
    if bad:
        return dict(row, status="fail", reason=f"{bad} of {expected.size} entries outside tolerance, {_worst_text(row)}")
    return dict(row, status="pass")


def _compare_entries(row, name, expected, actual_bundle, tol):
    """ACTUAL holds a subset of entries of a gradient: ``index`` (n, ndim) and ``value`` (n,)."""
    if tol["kind"] != "gradient":
        return dict(row, status="fail", reason="only gradients may be given as entries")
    index, value = actual_bundle.read(name)
    row.update(actual_shape=[int(n) for n in value.shape], actual_dtype=str(value.dtype), form="entries")
    n = value.shape[0] if value.ndim == 1 else -1
    if n < 1 or index.shape != (n, expected.ndim) or not np.issubdtype(index.dtype, np.integer):
        return dict(
            row, status="fail", reason=f"entries need index (n, {expected.ndim}) integers and value (n,), n >= 1; "
            f"got index {index.shape} {index.dtype}, value {value.shape}"
        )
    if not _same_dtype(value.dtype, expected.dtype):
        return dict(row, status="fail", reason=f"dtype {value.dtype}, expected {expected.dtype}")
    if (index < 0).any() or (index >= np.array(expected.shape)).any():
        return dict(row, status="fail", reason=f"entry index out of range for shape {expected.shape}")
    picked = expected[tuple(index.T)]
    max_abs, max_rel, used, bad, worst = _errors(value, picked, tol["rtol"], tol["atol"])
    row.update(max_abs_error=max_abs, max_rel_error=max_rel, tolerance_used=used, mismatches=bad, checked=int(n))
    if worst is not None:
        row["worst_entry"] = worst
        _worst(row, worst, index[worst], picked, value)
    if bad:
        return dict(row, status="fail", reason=f"{bad} of {n} given entries outside tolerance, "
                    f"{_worst_text(row, entry=row['worst_entry'])}")
    return dict(row, status="pass")


def _worst_text(row, entry=None):
    """``worst at [i, j] (actual A, expected E)``; for gradient entries, which given entry it is."""
    where = "[" + ", ".join(str(i) for i in row["worst_index"]) + "]"
    which = f"worst: given entry {entry}, at {where}" if entry is not None else f"worst at {where}"
    return f"{which} (actual {row['worst_actual']:.7g}, expected {row['worst_expected']:.7g})"


def _same_dtype(a, b):
    """Equal dtypes up to byte order (float32 is float32, big or little endian)."""
    return a.newbyteorder("=") == b.newbyteorder("=")


def _stored_tolerance(item, name, expected):
    """EXPECTED's tolerance attributes, or the policy's defaults where it has none."""
    keys = ("kind", "rtol", "atol", "required")
    if all(key in item.attrs for key in keys):
        out = {key: _attr_value(item.attrs[key]) for key in keys}
    else:
        default = tolerance(name, expected) if kind_of(name) else dict(kind="unknown", rtol=0.0, atol=0.0, required=True)
        out = dict(default)
        for key in keys:
            if key in item.attrs:
                out[key] = _attr_value(item.attrs[key])
    out["rtol"], out["atol"], out["required"] = float(out["rtol"]), float(out["atol"]), bool(out["required"])
    return out


def _check_versions(expected, actual):
    """Two bundles of different format versions cannot be compared dataset by dataset: say what would do."""
    e, a = expected.attrs.get("format_version"), actual.attrs.get("format_version")
    if e == a:
        return
    if e == 1:
        need = (f"EXPECTED is version 1 (no edge/ section) and ACTUAL version {a}: "
                f"export EXPECTED again with this untapped (version {FORMAT_VERSION})")
    else:
        need = (f"EXPECTED is version {e} and ACTUAL version {a}: ACTUAL needs format_version {e} and the edge/ "
                f"section (docs/reference_format.md §7.7-7.8), or compare it with a version-{a} EXPECTED")
    raise ReferenceError(f"{actual.path}: {need}")


def compare(expected_path, actual_path):
    """Compare bundle ACTUAL against EXPECTED; returns a JSON-able report dict.

    Every dataset of EXPECTED is looked up in ACTUAL by name. Missing
    datasets fail unless their ``required`` attribute is false (the given
    data: inputs, noise, initial parameters); datasets in ACTUAL that
    EXPECTED lacks fail as extra. Shapes and dtypes must be equal, then
    values within EXPECTED's ``rtol`` / ``atol``. A gradient in ACTUAL may be a
    group of entries (``form='entries'``, datasets ``index`` and ``value``);
    only those entries are checked.
    """
    with Bundle(expected_path) as expected, Bundle(actual_path) as actual:
        _check_versions(expected, actual)
        rows, missing, skipped = [], [], []
        for name, item in expected.items.items():
            if name not in actual.items:
                required = _stored_tolerance(item, name, np.zeros(0)).get("required", True)
                (missing if required else skipped).append(name)
                rows.append(
                    OrderedDict(name=name, status="missing" if required else "not given", shape=list(item.shape),
                                dtype=str(item.dtype))
                )
                continue
            rows.append(_compare_item(name, expected, actual))
        extra = [name for name in actual.items if name not in expected.items]
        for name in extra:
            item = actual.items[name]
            shape = list(item.shape) if isinstance(item, h5py.Dataset) else None
            rows.append(OrderedDict(name=name, status="extra", shape=shape))
        notes = []
        for key in ("model", "seed", "rows", "steps"):
            if key in expected.attrs and key in actual.attrs and expected.attrs[key] != actual.attrs[key]:
                notes.append(f"{key}: expected {expected.attrs[key]!r}, actual {actual.attrs[key]!r}")
        failed = [r["name"] for r in rows if r["status"] == "fail"]
        subsets = [r["name"] for r in rows if r.get("form") == "entries"]
        hint = None
        if extra and not failed and not missing:
            hint = (f"every difference is a dataset only ACTUAL has ({len(extra)}): are EXPECTED and ACTUAL swapped? "
                    "untapped's bundle comes first")
        return OrderedDict(
            expected=str(expected_path),
            actual=str(actual_path),
            passed=not (failed or missing or extra),
            counts=OrderedDict(
                datasets=len(expected.items),
                passed=sum(r["status"] == "pass" for r in rows),
                failed=len(failed),
                missing=len(missing),
                extra=len(extra),
                not_given=len(skipped),
                entries_only=len(subsets),
            ),
            failed=failed,
            missing=missing,
            extra=extra,
            not_given=skipped,
            entries_only=subsets,
            notes=notes,
            hint=hint,
            datasets=rows,
            actual_producer=actual.attrs.get("producer"),
        )


def format_report(report, failures_only=False):
    """The comparison as a table and a summary line."""
    header = ("dataset", "shape", "max abs err", "max rel err", "rtol", "atol", "used", "result")
    lines = []
    for r in report["datasets"]:
        if failures_only and r["status"] in ("pass", "not given"):
            continue
        shape = "x".join(str(n) for n in r.get("shape") or []) or ("scalar" if r.get("shape") == [] else "?")
        if r.get("form") == "entries":
            shape = f"{r.get('checked', '?')}/{r.get('size', '?')} entries"
        result = r["status"]
        if r.get("reason"):
            result += f": {r['reason']}"
        lines.append(
            (
                r["name"],
                shape,
                _fmt(r.get("max_abs_error")),
                _fmt(r.get("max_rel_error")),
                _fmt(r.get("rtol")),
                _fmt(r.get("atol")),
                _fmt_used(r.get("tolerance_used")),
                result,
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    c = report["counts"]
    for note in report["notes"]:
        out.append(f"note: {note}")
    if report["passed"]:
        summary = f"PASS: all {c['passed']} compared datasets within tolerance"
        extras = []
        if c["not_given"]:
            extras.append(f"{c['not_given']} given arrays not in ACTUAL")
        if c["entries_only"]:
            extras.append(f"{c['entries_only']} gradients checked on given entries only")
        if extras:
            summary += f" ({'; '.join(extras)})"
    else:
        parts = [_summary_part(what, report[key]) for key, what in (("failed", "differ"), ("missing", "missing"),
                                                                    ("extra", "extra")) if report[key]]
        summary = "FAIL: " + "; ".join(parts)
        if any(len(report[key]) > SUMMARY_NAMES for key in ("failed", "missing", "extra")):
            summary += " (--json lists them all)"
    if report.get("hint"):
        out.append(f"hint: {report['hint']}")
    out.append(summary)
    return "\n".join(out)


#: The summary line names at most this many datasets per status, after a count per group.
SUMMARY_NAMES = 5


def _group_of(name):
    """The group a summary counts ``name`` in: its first path part, two for ``steps/<k>`` and ``edge/<section>``."""
    parts = name.split("/")
    return "/".join(parts[:2]) if parts[0] in ("steps", "edge") and len(parts) > 2 else parts[0]


def _summary_part(what, names):
    """``3 differ: a, b, c``; beyond :data:`SUMMARY_NAMES` names a count per group and the first few."""
    if len(names) <= SUMMARY_NAMES:
        return f"{len(names)} {what}: {', '.join(names)}"
    groups = OrderedDict()
    for name in names:
        groups[_group_of(name)] = groups.get(_group_of(name), 0) + 1
    counts = ", ".join(f"{group} {n}" for group, n in groups.items())
    shown = ", ".join(names[:SUMMARY_NAMES])
    return f"{len(names)} {what} ({counts}): {shown} and {len(names) - SUMMARY_NAMES} more"


def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    return f"{x:.2e}" if x else "0"


def _fmt_used(x):
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.2f}" if x < 100 else f"{x:.3g}"


def report_json(report):
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, float):
            return _json_number(value)
        return value

    return json.dumps(clean(report), indent=1)


# ---------------------------------------------------------------------------
# Describing


def describe(path):
    """The bundle's root attributes and its layout, as text."""
    with Bundle(path) as b:
        lines = [f"{b.path}: {FORMAT} version {b.attrs.get('format_version')}"]
        for key, value in b.attrs.items():
            if key in ("format", "format_version"):
                continue
            text = str(value)
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    text = json.dumps(json.loads(value), sort_keys=True)
                except ValueError:
                    pass
            lines.append(f"  @{key} = {text}")
        lines.append("")

        def walk(group, depth):
            for key, obj in group.items():
                pad = "  " * depth
                if isinstance(obj, h5py.Group) and _attr_value(obj.attrs.get("form")) != "entries":
                    extra = _attrs_text(obj.attrs)
                    lines.append(f"{pad}{key}/" + (f"  {extra}" if extra else ""))
                    walk(obj, depth + 1)
                elif isinstance(obj, h5py.Group):
                    n = obj["value"].shape[0] if "value" in obj else "?"
                    lines.append(f"{pad}{key}  entries ({n})")
                else:
                    shape = "x".join(str(n) for n in obj.shape) or "scalar"
                    lines.append(f"{pad}{key}  {shape} {obj.dtype}  {_attrs_text(obj.attrs)}".rstrip())

        walk(b.file, 0)
        lines.append("")
        lines.append(f"{len(b.items)} datasets")
        return "\n".join(lines)


def _attrs_text(attrs):
    parts = []
    for key, value in attrs.items():
        value = _attr_value(value)
        if isinstance(value, np.ndarray):
            value = f"[{value.size} values]" if value.size > 6 else value.tolist()
        elif isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, (bool, np.bool_)):
            value = str(bool(value)).lower()
        parts.append(f"{key}={value}")
    return " ".join(parts)


# ---------------------------------------------------------------------------
# Command line


class _OneLineErrors(click.Group):
    """A click group whose errors print as one ``error: ...`` line (exit 2), never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(EXIT_ERROR)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx is not None else exc.format_message(), err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(EXIT_ERROR)
        except ReferenceError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(EXIT_ERROR)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


@click.group(
    cls=_OneLineErrors,
    context_settings=dict(help_option_names=["-h", "--help"]),
    epilog="Exit status: 0 success, 1 compare found differences, 2 error. Format: docs/reference_format.md.",
)
def main():
    """Reference bundles: export what untapped computes, compare a port's bundle with it, describe a bundle."""


@main.command("export", context_settings=dict(show_default=True))
@click.argument("out", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--model", type=click.Choice(MODELS), default="untapped", help="Coefficients: untapped or the M2 baseline.")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, help="Initial weights (RandomState), inputs and noise.")
@click.option("--rows", type=click.IntRange(1, MAX_ROWS), default=DEFAULT_ROWS, help="Rows of each source (labeled, unlabeled, unfeatured).")
@click.option("--steps", type=click.IntRange(min=0), default=DEFAULT_STEPS, help="Optimiser steps, each with its own noise.")
@click.option("--inputs", type=click.Choice(INPUT_SOURCES), default="auto",
              help="MNIST rows, the synthetic batch, or MNIST if found (no download) else synthetic.")
@click.option("--data-dir", type=click.Path(path_type=pathlib.Path), default=None,
              help="Folder with the MNIST IDX files (or mnist.pkl.gz); default: UNTAPPED_DATA_DIR, then the user cache.")
@click.option("--download", is_flag=True, default=False, help="Download MNIST into the user cache if it is not found.")
@click.option("--mode", type=click.Choice(["c", "numba"]), default="c", help="PyTensor backend.")
@click.option("--force", is_flag=True, default=False, help="Replace OUT if it exists.")
def export_command(out, model, seed, rows, steps, inputs, data_dir, download, mode, force):
    """Write a reference bundle to OUT (HDF5)."""
    if out.exists() and not force:
        raise ReferenceError(f"{out} exists; pass --force to replace it")
    check_writable(out)
    summary = export(out, model, seed, rows, steps, inputs, data_dir, download, mode, overwrite=force)
    click.echo(summary["inputs"], err=True)
    click.echo(
        f"wrote {summary['path']}: {summary['datasets']} datasets, model {model}, seed {seed}, {rows} rows per source "
        f"({summary['inputs_source']} inputs), {steps} steps; total {summary['total']:.6g}"
    )


@main.command("compare", short_help="Check bundle ACTUAL against EXPECTED.")
@click.argument("expected", type=click.Path(path_type=pathlib.Path))
@click.argument("actual", type=click.Path(path_type=pathlib.Path))
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the results as JSON.")
@click.option("--failures", is_flag=True, default=False, help="List only the datasets that do not pass.")
def compare_command(expected, actual, as_json, failures):
    """Check bundle ACTUAL against EXPECTED, dataset by dataset, with EXPECTED's tolerances."""
    report = compare(expected, actual)
    click.echo(report_json(report) if as_json else format_report(report, failures_only=failures))
    sys.exit(EXIT_OK if report["passed"] else EXIT_DIFFERENT)


@main.command("describe")
@click.argument("path", type=click.Path(path_type=pathlib.Path))
def describe_command(path):
    """Print a bundle's attributes and layout."""
    click.echo(describe(path))


if __name__ == "__main__":
    main()
