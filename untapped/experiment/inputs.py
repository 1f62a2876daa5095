"""The data a run reads: the MNIST images, the paper's split of them, and the digit classifier fitted on them.

Nothing is kept between calls: a process that trains one run after another
holds one run's split at a time, not the 70,000 images as well.
"""

import dataclasses
import time

import numpy as np

from untapped import data as data_io
from untapped.data.split import NUM_UNLABELED
from untapped.experiment.spec import ExperimentError
from untapped.presets import DEFAULT_SEED, DEFAULT_VARIANT, VARIANTS

#: Rows of a split cut by :func:`subset_split`.
_SUBSET_FIELDS = {
    "labeled": ("labeled_x", "labeled_y", "labeled_digits", "labeled_index"),
    "eval": ("eval_x", "eval_y", "eval_digits", "eval_index"),
    "unlabeled": ("unlabeled_x", "unlabeled_index", "unlabeled_digits"),
}


def data_location(data_dir=None):
    """Where MNIST will be read from (see :func:`untapped.data.find_mnist`); may download."""
    return data_io.find_mnist(data_dir)


def load_images(data_dir=None):
    """All 70,000 binarised images and their digits, read and verified (about a second).

    Nothing is kept: a run holds its split (:func:`load_split`), not the
    70,000 images as well (another 220 MB while it trains).
    """
    return data_io.load_binarized_mnist(data_location(data_dir), download=False)


def check_subset(subset, digits):
    """Raise :class:`ExperimentError` if ``--subset`` would cut nothing: no smaller than the largest set of the split.

    ``digits`` are the 70,000 images' digits (:func:`load_images`): the
    labeled set is the digits 0-4, the evaluation set the digits 5-9, and
    :data:`untapped.data.split.NUM_UNLABELED` images are drawn unlabeled.
    """
    if subset is None:
        return
    labeled = int(np.isin(digits, data_io.LABELED_DIGITS).sum())
    sizes = dict(labeled=labeled, evaluation=len(digits) - labeled, unlabeled=NUM_UNLABELED)
    if int(subset) >= max(sizes.values()):
        raise ExperimentError(
            f"--subset {subset} cuts nothing: the largest set has {max(sizes.values())} rows "
            f"({', '.join(f'{k} {v}' for k, v in sizes.items())}); omit --subset to use all the data"
        )


def subset_split(split, n):
    """``split`` with only the first ``n`` rows of its labeled, evaluation and unlabeled sets."""
    if n is None:
        return split
    n = int(n)
    if n < 1:
        raise ExperimentError(f"--subset must be at least 1, got {n}")
    changes = {name: getattr(split, name)[:n] for fields in _SUBSET_FIELDS.values() for name in fields}
    return dataclasses.replace(split, **changes)


def load_split(data_dir=None, seed=DEFAULT_SEED, subset=None, variant=DEFAULT_VARIANT):
    """The paper's split for ``seed`` (:func:`untapped.data.make_split`, with the variant's options), cut to
    ``subset`` rows."""
    images, digits = load_images(data_dir)
    return subset_split(data_io.make_split(images, digits, seed=seed, **VARIANTS[variant].split), subset)


def classifier_data(images, digits, subset=None):
    """The images and digits the digit classifier is fitted on.

    All 70,000 binarised images (paper §3: "pre-trained on the entire
    dataset"); with ``subset`` (quick tests) only the first ``subset`` images
    of each digit, so that every digit is still present.
    """
    if subset is None:
        return images, digits
    rows = np.concatenate([np.flatnonzero(digits == d)[: int(subset)] for d in range(data_io.NUM_CLASSES)])
    rows.sort()
    return images[rows], digits[rows]


def digit_classifier(data_dir=None, subset=None, cache_dir=None, images=None, say=None):
    """The paper's logistic-regression digit classifier (:func:`untapped.evaluation.digit_classifier`), cached.

    ``images`` are :func:`load_images`'s ``(images, digits)`` if the caller
    has them already; else they are read from ``data_dir``. ``say``
    receives a line before a fit (minutes for all 70,000 images on a small
    machine) and one after it, with its time; loading from the cache is quiet.
    """
    from untapped import evaluation

    images, digits = load_images(data_dir) if images is None else images
    fitting = []

    def on_fit(rows):
        fitting.append(time.perf_counter())
        if say is not None:
            say(f"digit classifier: fitting it on {rows} images, once (then cached); "
                "a few minutes for all 70,000 on a small machine")

    classifier = evaluation.digit_classifier(
        *classifier_data(images, digits, subset), cache_dir=cache_dir, on_fit=on_fit
    )
    if fitting and say is not None:
        say(f"digit classifier: fitted in {time.perf_counter() - fitting[0]:.1f} s")
    return classifier
