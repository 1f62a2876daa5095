"""A bundle's given data: its generators, its fixed batch (MNIST or synthetic) and its noise.

``docs/reference_format.md`` §4 (noise) and §5 (inputs) state every draw;
the edge section's own batch and noise are in :mod:`untapped.reference.edge`.
"""

import os
import pathlib
from collections import OrderedDict

import numpy as np

from untapped.files import one_line
from untapped.reference.bundle import BundleError

INPUT_SOURCES = ("auto", "mnist", "synthetic")
#: Bernoulli uniforms closer than this to their decoder mean are moved to this distance.
BERNOULLI_MARGIN = 1e-3
#: Probability of a lit pixel in the synthetic batch (MNIST's binarised rate is 13.1%).
SYNTHETIC_PIXEL_RATE = 0.13
#: The box from which the unfeatured z are drawn (the original's ``z2``).
Z_DRAW_LOW, Z_DRAW_HIGH = -1.5, 1.5


def generators(seed):
    """The three generators of a bundle: ``(inputs, noise, edge)``, from ``SeedSequence(seed).spawn(3)``.

    A child depends only on its position, so the first two are those of
    ``spawn(2)`` (format version 1 had only these).
    """
    return tuple(np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(3))


# ---------------------------------------------------------------------------
# The fixed batch


def make_inputs(rng, rows, source="auto", data_dir=None, download=False):
    """The fixed batch: ``(batch, info)``, ``batch`` in :data:`untapped.paper.passes.BATCH` order.

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
        raise BundleError(f"inputs must be one of {', '.join(INPUT_SOURCES)}, not {source!r}")
    unfeatured_y = data.close_corners()[np.arange(rows) % data.NUM_CLASSES]
    unfeatured_z = rng.uniform(Z_DRAW_LOW, Z_DRAW_HIGH, size=(rows, 2)).astype(np.float32)
    info = OrderedDict()
    mnist = _find_mnist(source, data_dir, download, info) if source != "synthetic" else None
    if mnist is not None:
        batch, digits = _mnist_batch(rng, rows, *mnist, info)
    else:
        batch, digits = _synthetic_batch(rng, rows)
        info["source"] = "synthetic"
    info["labeled_digits"] = np.asarray(digits, dtype=np.int64)
    batch.update(unfeatured_y=unfeatured_y, unfeatured_z=unfeatured_z)
    return OrderedDict((k, np.ascontiguousarray(v, dtype=np.float32)) for k, v in batch.items()), info


def _find_mnist(source, data_dir, download, info):
    """``(images, digits)`` of MNIST, or None (with a note in ``info``) if 'auto' may fall back."""
    from untapped import data

    explicit = data_dir is not None or bool(os.environ.get(data.ENV_VAR))
    try:
        location = data.find_mnist(data_dir, download=download)
        images, digits = data.load_binarized_mnist(location, download=False)
    except data.DataError as exc:
        if source == "mnist" or explicit:
            raise BundleError(f"MNIST inputs: {one_line(exc)}") from None
        info["note"] = (f"MNIST not found (looked in the user cache {data.default_cache_dir()}; "
                        "no download without --download)")
        return None
    info["location"], info["found_by"] = str(location), _found_by(location, data_dir)
    return images, digits


def _mnist_batch(rng, rows, images, digits, info):
    """MNIST rows: labeled ones among the digits 0-4, unlabeled ones among all; ``(batch, labeled digits)``."""
    from untapped import data

    pool = np.flatnonzero(np.isin(digits, data.LABELED_DIGITS))
    if rows > len(pool):
        raise BundleError(f"--rows {rows} exceeds the {len(pool)} labeled MNIST images")
    labeled_index = rng.choice(pool, size=rows, replace=False)
    unlabeled_index = rng.choice(len(images), size=rows, replace=False)
    labeled_digits = digits[labeled_index]
    batch = OrderedDict(
        labeled_x=images[labeled_index],
        labeled_y=np.eye(data.NUM_CLASSES, dtype=np.float32)[labeled_digits],
        unlabeled_x=images[unlabeled_index],
    )
    info.update(source="mnist", labeled_index=labeled_index, unlabeled_index=unlabeled_index)
    return batch, labeled_digits


def _synthetic_batch(rng, rows):
    """Random images at MNIST's ink rate, labeled digits 0-4 in turn; ``(batch, labeled digits)``."""
    from untapped import data

    labeled_digits = np.arange(rows) % len(data.LABELED_DIGITS)
    batch = OrderedDict(
        labeled_x=(rng.random((rows, data.NUM_PIXELS)) < SYNTHETIC_PIXEL_RATE).astype(np.float32),
        labeled_y=np.eye(data.NUM_CLASSES, dtype=np.float32)[labeled_digits],
        unlabeled_x=(rng.random((rows, data.NUM_PIXELS)) < SYNTHETIC_PIXEL_RATE).astype(np.float32),
    )
    return batch, labeled_digits


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


# ---------------------------------------------------------------------------
# Noise


def draw_noise(rng, rows, dims):
    """One set of noise arrays from ``rng``, in :data:`untapped.samplers.NOISE` order.

    Uniforms: ``rng.random(shape, dtype=np.float32)`` (float32 in [0, 1));
    normals: ``rng.standard_normal(shape, dtype=np.float32)``. ``dims`` gives
    the width of each kind (:attr:`untapped.model.SSDGM.dims`).
    """
    from untapped.paper import samplers

    out = OrderedDict()
    for spec in samplers.NOISE:
        shape = (rows, dims[spec.width])
        if spec.distribution == "uniform":
            out[samplers.noise_key(spec)] = rng.random(shape, dtype=np.float32)
        else:
            out[samplers.noise_key(spec)] = rng.standard_normal(shape, dtype=np.float32)
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
