"""The paper's MNIST task (§3, "a new MNIST task"), cut from the 70,000 binarised images.

The original code (``load_mnist.py:130-168``, ``DEMO_mnist.py:33-42``)
cut the stacked images into:

* labeled pairs: every image of the digits 0-4, with one-hot labels;
* evaluation pairs: every image of the digits 5-9 (the original's "valid");
* unlabeled images: 20,000 rows drawn with replacement from all 70,000;
* unfeatured labels: 10 "close corners" of the simplex, each permanently
  paired with one observed z ~ U(-1.5, 1.5)^2.

One declared deviation (``docs/fidelity.md``, *Declared fixes*; ``load_mnist.py:133``):
the original drew the unlabeled subset and the z values from the unseeded
global NumPy state; here they come from ``np.random.default_rng(seed)``
(see :func:`make_split` for the order of the draws), a use of the seed of
its own (:mod:`untapped.streams`).
"""

import dataclasses

import numpy as np

from untapped.data.reading import NUM_CLASSES
from untapped.data.source import MIRRORS, load_binarized_mnist
from untapped.presets import DEFAULT_SEED

#: The digits whose labels the task gives (the rest are the evaluation set).
LABELED_DIGITS = (0, 1, 2, 3, 4)
#: Unlabeled images drawn with replacement from all 70,000 (the original's ``20000``).
NUM_UNLABELED = 20_000
#: The box of the unfeatured z draws, z_u ~ U(-1.5, 1.5)^2 (the code's and the paper's p(z), App. D).
UNFEATURED_Z_BOX = (-1.5, 1.5)


def close_corners(num_classes=NUM_CLASSES, peak=0.95):
    """The original's "close corners" of the simplex (``load_mnist.py``).

    Row k is ``peak`` at k and ``(1 - peak) / (num_classes - 1)`` elsewhere,
    so every row sums to 1 and no entry is 0 (which keeps the Concrete log
    density of the reverse bound finite). float32.
    """
    rest = (1.0 - peak) / (num_classes - 1)
    corners = np.full((num_classes, num_classes), rest) + np.eye(num_classes) * (peak - rest)
    return corners.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class MNISTSplit:
    """The arrays of the paper's MNIST task (``load_mnist.py:130-168``, ``DEMO_mnist.py:33-42``).

    Index arrays refer to rows of the 70,000-image stack. The evaluation
    unlabeled images and unfeatured labels are the training ones, as in the
    original (``eval_unlabeled_x`` and ``eval_unfeatured_y`` return them);
    only the evaluation z is a separate draw.
    """

    seed: int
    unfeatured: str
    labeled_x: np.ndarray  # [35735, 784] digits 0-4
    labeled_y: np.ndarray  # [35735, 10] one-hot
    labeled_digits: np.ndarray
    labeled_index: np.ndarray
    eval_x: np.ndarray  # [34265, 784] digits 5-9
    eval_y: np.ndarray  # [34265, 10] one-hot
    eval_digits: np.ndarray
    eval_index: np.ndarray
    unlabeled_x: np.ndarray  # [20000, 784]
    unlabeled_index: np.ndarray
    unlabeled_digits: np.ndarray  # for diagnostics only; the model never sees them
    unfeatured_y: np.ndarray  # [10, 10]
    unfeatured_z: np.ndarray  # [10, 2], row k paired with unfeatured_y[k]
    eval_unfeatured_z: np.ndarray  # [10, 2], the original's z2_valid

    @property
    def eval_unlabeled_x(self):
        return self.unlabeled_x

    @property
    def eval_unfeatured_y(self):
        return self.unfeatured_y

    def sizes(self):
        """Rows per source: labeled, eval, unlabeled, unfeatured."""
        return {
            "labeled": len(self.labeled_x),
            "eval": len(self.eval_x),
            "unlabeled": len(self.unlabeled_x),
            "unfeatured": len(self.unfeatured_y),
        }

    def summary(self):
        """A short multi-line description for logs."""
        lines = [f"MNIST split (seed {self.seed}, unfeatured {self.unfeatured!r}):"]
        sources = (
            ("labeled", self.labeled_digits),
            ("eval", self.eval_digits),
            ("unlabeled", self.unlabeled_digits),
        )
        for source, digits in sources:
            counts = np.bincount(digits, minlength=NUM_CLASSES)
            per_digit = " ".join(f"{d}:{c}" for d, c in enumerate(counts) if c)
            lines.append(f"  {source:<10} {len(digits):>6} rows  ({per_digit})")
        lines.append(
            f"  unfeatured {len(self.unfeatured_y):>6} rows  "
            f"(y {self.unfeatured_y.shape}, z {self.unfeatured_z.shape})"
        )
        return "\n".join(lines)

    def as_fit_data(self):
        """The arrays under the names of the original ``SSDGM.fit`` (``DEMO_mnist.py:33-42``)."""
        return {
            "X": self.labeled_x,
            "y": self.labeled_y,
            "X_": self.unlabeled_x,
            "_y": self.unfeatured_y,
            "z2": self.unfeatured_z,
            "X_valid": self.eval_x,
            "y_valid": self.eval_y,
            "X__valid": self.eval_unlabeled_x,
            "_y_valid": self.eval_unfeatured_y,
            "z2_valid": self.eval_unfeatured_z,
        }


def make_split(
    images,
    digits,
    *,
    seed,
    num_unlabeled=NUM_UNLABELED,
    unfeatured="corners",
    num_unfeatured=NUM_CLASSES,
    corner_peak=0.95,
    z_low=UNFEATURED_Z_BOX[0],
    z_high=UNFEATURED_Z_BOX[1],
):
    """Cut the stacked images into the paper's task (``load_mnist.py:130-168``).

    ``images`` are used as given (pass binarised ones for the original);
    ``digits`` are the int labels in the same order. Labeled = every row
    with digit 0-4 and eval = every row with digit 5-9, both in stacking
    order with one-hot float32 labels.

    Random draws, from ``np.random.default_rng(seed)`` in this order (the
    order of the original, whose draws were unseeded):

    1. ``unlabeled_index = rng.integers(0, len(images), size=num_unlabeled)``,
       uniform with replacement over all rows (``np.random.choice(70000,
       20000)`` in ``load_mnist.py``);
    2. ``unfeatured_z = rng.uniform(z_low, z_high, size=(num_unfeatured, 2))``
       (``z2``, ``DEMO_mnist.py:41``);
    3. ``eval_unfeatured_z``, a second draw of the same shape (``z2_valid``,
       ``DEMO_mnist.py:42``).

    Draws are float64, then cast to float32 like everything else here.

    Unfeatured labels: row k is class ``k % 10``, as
    ``unfeatured='corners'`` (the code: :func:`close_corners` with
    ``corner_peak``) or ``unfeatured='onehot'`` (the paper, whose
    unfeatured labels are one-hot vectors; ``docs/fidelity.md`` item 11).
    ``num_unfeatured`` is 10 in the code; a larger value gives each of more
    rows its own z, nearer the paper's Algorithm 1, where every unfeatured
    y comes with a ``z ~ p(z)`` (``docs/fidelity.md`` item 10).
    """
    images = np.asarray(images, dtype=np.float32)
    digits = np.asarray(digits, dtype=np.int64)
    if images.ndim != 2 or digits.shape != (len(images),):
        raise ValueError(f"images {images.shape} and digits {digits.shape} do not match")
    if unfeatured == "corners":
        classes = close_corners(NUM_CLASSES, corner_peak)
    elif unfeatured == "onehot":
        classes = np.eye(NUM_CLASSES, dtype=np.float32)
    else:
        raise ValueError(f"unfeatured must be 'corners' or 'onehot', not {unfeatured!r}")

    rng = np.random.default_rng(seed)
    unlabeled_index = rng.integers(0, len(images), size=num_unlabeled)
    unfeatured_z = rng.uniform(z_low, z_high, size=(num_unfeatured, 2)).astype(np.float32)
    eval_unfeatured_z = rng.uniform(z_low, z_high, size=(num_unfeatured, 2)).astype(np.float32)

    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)
    labeled_index = np.flatnonzero(np.isin(digits, LABELED_DIGITS))
    eval_index = np.flatnonzero(~np.isin(digits, LABELED_DIGITS))
    return MNISTSplit(
        seed=seed,
        unfeatured=unfeatured,
        labeled_x=images[labeled_index],
        labeled_y=one_hot[digits[labeled_index]],
        labeled_digits=digits[labeled_index],
        labeled_index=labeled_index,
        eval_x=images[eval_index],
        eval_y=one_hot[digits[eval_index]],
        eval_digits=digits[eval_index],
        eval_index=eval_index,
        unlabeled_x=images[unlabeled_index],
        unlabeled_index=unlabeled_index,
        unlabeled_digits=digits[unlabeled_index],
        unfeatured_y=classes[np.arange(num_unfeatured) % NUM_CLASSES],
        unfeatured_z=unfeatured_z,
        eval_unfeatured_z=eval_unfeatured_z,
    )


def load_split(
    data_dir=None,
    *,
    seed=DEFAULT_SEED,
    unfeatured="corners",
    num_unlabeled=NUM_UNLABELED,
    num_unfeatured=NUM_CLASSES,
    corner_peak=0.95,
    cache_dir=None,
    mirrors=MIRRORS,
    download=True,
    checksums=None,
    timeout=60.0,
):
    """Find, read, binarise and split MNIST: the data of the DEMO run.

    ``seed`` seeds the split's draws (the default is the seed the original
    used for everything it did seed); ``unfeatured``, ``num_unlabeled``,
    ``num_unfeatured`` and ``corner_peak`` are those of :func:`make_split`;
    the rest are those of :func:`find_mnist`.
    """
    images, digits = load_binarized_mnist(
        data_dir,
        cache_dir=cache_dir,
        mirrors=mirrors,
        download=download,
        checksums=checksums,
        timeout=timeout,
    )
    return make_split(
        images,
        digits,
        seed=seed,
        unfeatured=unfeatured,
        num_unlabeled=num_unlabeled,
        num_unfeatured=num_unfeatured,
        corner_peak=corner_peak,
    )
