"""MNIST for the untapped experiment: reading, finding, downloading, splitting.

The original code (``examples/datasets/load_mnist.py`` and
``examples/DEMO_mnist.py``; the notes in ``original_code.md`` §1) read the
deeplearning.net ``mnist.pkl.gz``, stacked its three parts into one array of
70,000 images, binarised them with ``np.round`` and cut that stack into the
paper's task (§3 of the paper, "a new MNIST task"):

* labeled pairs: every image of the digits 0-4, with one-hot labels;
* evaluation pairs: every image of the digits 5-9 (the original's "valid");
* unlabeled images: 20,000 rows drawn with replacement from all 70,000;
* unfeatured labels: 10 "close corners" of the simplex, each permanently
  paired with one observed z ~ U(-1.5, 1.5)^2.

This module reproduces that data exactly, from either the four IDX files
(the form in which MNIST is distributed today) or the old pickle. The IDX
files are stacked in the pickle's order, ``train[50000:60000]`` (the pickle's
"valid"), then ``t10k`` (its "test"), then ``train[0:50000]`` (its "train"),
and scaled by 1/256 (which is what the pickle is understood to store), so
both sources give the same arrays.

One declared deviation (``design.md`` §1.4, ``original_code.md`` §7 item 32):
the original drew the unlabeled subset and the z values from the unseeded
global NumPy state; here they come from ``np.random.default_rng(seed)``
(see :func:`make_split` for the order of the draws).

Where the data come from (:func:`find_mnist`): an explicit folder (argument,
else the ``UNTAPPED_DATA_DIR`` environment variable), then the user cache
(``$XDG_CACHE_HOME/untapped/mnist`` or ``~/.cache/untapped/mnist``), then a
download into that cache from :data:`MIRRORS`. Every IDX file is checked
against the sha256 of its *decompressed* content (:data:`SHA256`), wherever it
came from, each time it is read; the check costs about 0.04 s for the 47 MB
training images, small next to decompression, so no record of earlier checks
is kept. Every failure is a :class:`DataError` with a one-line message.
"""

import dataclasses
import gzip
import hashlib
import http.client
import logging
import os
import pathlib
import pickle
import shutil
import struct
import tempfile
import urllib.request
import zlib

import numpy as np
from untapped.files import one_line

logger = logging.getLogger(__name__)

#: Base URLs tried in order for ``<name>.gz``; any scheme urllib opens works,
#: including ``file://`` (which is how the tests fake a mirror).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: The four IDX files by their decompressed names.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: sha256 of the decompressed IDX content (``shared/data/mnist/README.md``);
#: gzip bytes differ between mirrors, the decompressed bytes do not.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: Records in each IDX pair.
IDX_RECORDS = {"train": 60_000, "t10k": 10_000}

#: The pickle's "valid" part is the last 10,000 IDX training images.
PKL_TRAIN_SIZE = 50_000

PICKLE_NAME = "mnist.pkl.gz"
ENV_VAR = "UNTAPPED_DATA_DIR"

NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
LABELED_DIGITS = (0, 1, 2, 3, 4)
#: The box of the unfeatured z draws, z_u ~ U(-1.5, 1.5)^2 (the code's and the paper's p(z), App. D).
UNFEATURED_Z_BOX = (-1.5, 1.5)

_IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(Exception):
    """Any failure to find, fetch or read MNIST; the message is one line."""


# ---------------------------------------------------------------- reading


def read_idx(path, *, sha256=None):
    """Read one IDX file, gzip-compressed or plain, as a read-only uint8 array.

    Compression is recognised by the gzip magic bytes, not the file name.
    The header is validated (zero bytes, unsigned-byte element type, 1 to 3
    dimensions, and a payload of exactly the announced size), and, if
    ``sha256`` is given, the hex digest of the decompressed bytes must equal
    it. Any problem raises :class:`DataError` naming ``path``.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({one_line(exc)})") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path}: corrupt or truncated gzip data ({one_line(exc)}); replace the file"
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    if not 1 <= ndim <= 3:
        raise DataError(f"{path}: IDX file with {ndim} dimensions")
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    expected = offset + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: IDX header announces {expected} bytes of shape {shape}, "
            f"file holds {len(raw)}; the file is truncated or corrupt, replace it"
        )
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise DataError(
                f"{path}: sha256 of the decompressed content is {digest}, expected {sha256}; "
                "the file is corrupt or not the MNIST file, replace it"
            )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _read_mnist_file(path, name, checksums):
    """Read one of :data:`IDX_FILES` and check its kind and image size."""
    array = read_idx(path, sha256=checksums.get(name))
    kind = "images" if "images" in name else "labels"
    magic = 0x0800 + array.ndim
    if magic != _IDX_MAGIC[kind]:
        raise DataError(
            f"{path}: IDX magic 0x{magic:08x}, expected 0x{_IDX_MAGIC[kind]:08x} for {kind}"
        )
    if kind == "images" and array.shape[1:] != (28, 28):
        raise DataError(f"{path}: images of {array.shape[1:]} pixels, expected (28, 28)")
    if kind == "labels" and array.size and array.max() >= NUM_CLASSES:
        raise DataError(f"{path}: label {array.max()} outside 0-9")
    return array


def _missing_idx(folder):
    """The IDX files (by their decompressed names) that ``folder`` holds neither plain nor gzipped."""
    return [name for name in IDX_FILES if not (folder / f"{name}.gz").is_file() and not (folder / name).is_file()]


def _idx_set(folder):
    """Paths of the four IDX files in ``folder`` (``.gz`` preferred), or None."""
    found = {}
    for name in IDX_FILES:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            return None
    return found


def load_idx_dir(folder, *, checksums=None):
    """The 70,000 MNIST images and labels from the IDX files in ``folder``.

    Returns ``(images, labels)``: float32 ``[70000, 784]`` equal to
    ``uint8 / 256`` (exact in float32, values in [0, 255/256]) and int64
    ``[70000]``, stacked like the original (``original_code.md`` §1.1):
    ``train[50000:60000]``, ``t10k``, ``train[0:50000]``. Each file is
    verified against ``checksums`` (default :data:`SHA256`) and the record
    counts against :data:`IDX_RECORDS`.
    """
    folder = pathlib.Path(folder)
    checksums = SHA256 if checksums is None else checksums
    paths = _idx_set(folder)
    if paths is None:
        missing = [n for n in IDX_FILES if not (folder / n).is_file() and not (folder / f"{n}.gz").is_file()]
        raise DataError(f"{folder}: missing MNIST IDX file(s) {', '.join(missing)} (.gz or plain)")
    parts = {}
    for prefix, records in IDX_RECORDS.items():
        pair = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{prefix}-{kind}"
            array = _read_mnist_file(paths[name], name, checksums)
            if len(array) != records:
                raise DataError(f"{paths[name]}: {len(array)} records, expected {records}")
            pair.append(array)
        parts[prefix] = (pair[0].reshape(records, NUM_PIXELS), pair[1])
    (train_x, train_y), (test_x, test_y) = parts["train"], parts["t10k"]
    cut = PKL_TRAIN_SIZE
    images = np.concatenate((train_x[cut:], test_x, train_x[:cut]))
    labels = np.concatenate((train_y[cut:], test_y, train_y[:cut]))
    # 1/256 is a power of two, so the float32 product is exact.
    return images.astype(np.float32) * np.float32(1 / 256), labels.astype(np.int64)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and tuples only, never arbitrary callables.

    The pickle comes from the network or a user's disk; a plain
    ``pickle.load`` would run whatever it names. Old (NumPy 1.x / Python 2)
    pickles name ``numpy.core``, which NumPy 2 keeps as ``numpy._core``.
    """

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(path):
    """The 70,000 images and labels from a deeplearning.net ``mnist.pkl.gz``.

    The file is a gzip pickle of ``(train, valid, test)``, each
    ``(images float32 [N, 784] in [0, 1], labels int [N])``; it is read as
    ``pickle.load(f, encoding='latin1')`` would (the original's
    ``utilities.load_url``), restricted to numpy arrays. Returns
    ``(images float32, labels int64)`` stacked ``valid, test, train`` as in
    ``load_mnist.py`` (``original_code.md`` §1.1). There is no published
    checksum of the decompressed pickle, so only its structure is validated.
    """
    path = pathlib.Path(path)
    try:
        with gzip.open(path, "rb") as f:
            parts = _ArrayUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise DataError(f"{path}: cannot read gzip data ({one_line(exc)})") from None
    except (EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: corrupt or not an MNIST pickle ({one_line(exc)})") from None
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    except (TypeError, ValueError):
        raise DataError(f"{path}: expected three (images, labels) pairs") from None
    xs, ys = [], []
    for part, x, y in (("valid", valid_x, valid_y), ("test", test_x, test_y), ("train", train_x, train_y)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != NUM_PIXELS or y.shape != (len(x),):
            raise DataError(f"{path}: {part} part has images {x.shape} and labels {y.shape}")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{path}: {part} images outside [0, 1]")
        if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES or not np.all(y == np.round(y))):
            raise DataError(f"{path}: {part} labels outside 0-9")
        xs.append(x.astype(np.float32))
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def binarize(images):
    """Binarise as the original does: ``np.round(images)`` (``load_mnist.py``).

    ``np.round`` rounds half to even, so 0.5 becomes 0. On ``uint8 / 256``
    input the rule is therefore ``u8 > 128`` (128/256 = 0.5 -> 0, 129/256 ->
    1); had the pickle stored ``uint8 / 255`` it would have been
    ``u8 >= 128``, which differs on 88,212 of MNIST's 54.88M pixels
    (``original_code.md`` §1.1). Returns float32 zeros and ones.
    """
    return np.round(np.asarray(images, dtype=np.float32))


# ---------------------------------------------------------------- finding


def default_cache_dir():
    """``$XDG_CACHE_HOME/untapped/mnist``, else ``~/.cache/untapped/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "untapped" / "mnist"


def _where_to_put(cache_dir):
    names = ", ".join(f"{n}.gz" for n in IDX_FILES)
    return (
        f"put {names} (or {PICKLE_NAME}) in a folder and pass it with --data-dir "
        f"or {ENV_VAR}, or into {cache_dir}"
    )


def _fetch_one(name, cache_dir, mirrors, checksums, timeout):
    """Download ``name.gz`` into ``cache_dir``: ``(path or None, reasons, corrupt)``.

    Mirrors are tried in order. A mirror that serves a file failing
    verification is skipped like an unreachable one, so a single bad copy
    never blocks the download. The file is written to a temporary name in
    the same folder and renamed only after it has been verified, so an
    interrupted or bad download never looks like a cached file. ``corrupt``
    says whether any mirror served a bad copy (rather than none answering).
    """
    reasons, corrupt = [], False
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{name}.gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=cache_dir)
        tmp = pathlib.Path(tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    request = urllib.request.Request(url, headers={"User-Agent": "untapped-mnist"})
                    with urllib.request.urlopen(request, timeout=timeout) as response:
                        shutil.copyfileobj(response, out)
                except (OSError, ValueError, http.client.HTTPException) as exc:
                    reasons.append(f"{url}: {one_line(exc)}")
                    continue
                out.flush()
                os.fsync(out.fileno())
            try:
                _read_mnist_file(tmp, name, checksums)
            except DataError as exc:
                corrupt = True
                reasons.append(f"{url}: {str(exc).replace(str(tmp), 'download')}")
                logger.warning("mirror %s served a bad %s.gz; trying the next mirror", mirror, name)
                continue
            with open(tmp, "rb") as f:
                is_gzip = f.read(2) == _GZIP_MAGIC
            target = cache_dir / (f"{name}.gz" if is_gzip else name)
            os.replace(tmp, target)
            logger.info("downloaded and verified %s from %s", target.name, mirror)
            return target, reasons, corrupt
        finally:
            tmp.unlink(missing_ok=True)
    return None, reasons, corrupt


def download_mnist(cache_dir=None, *, mirrors=MIRRORS, checksums=None, timeout=60.0):
    """Download the IDX files missing from ``cache_dir`` and verify them.

    Each missing ``<name>.gz`` is fetched from the first of ``mirrors`` that
    serves a copy whose decompressed sha256 matches ``checksums`` (default
    :data:`SHA256`). Files already in ``cache_dir`` are left alone (they are
    verified when read). Raises :class:`DataError` naming the file when
    mirrors were reached but none served a valid copy, and the one-line
    "where to put the files" message when no mirror could be reached.
    Returns ``cache_dir``.
    """
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    checksums = SHA256 if checksums is None else checksums
    return _download(cache_dir, mirrors, checksums, timeout, searched=[cache_dir])


def _download(cache_dir, mirrors, checksums, timeout, searched):
    looked = ", ".join(str(p) for p in searched)
    if not mirrors:
        raise DataError(f"MNIST not found in {looked} and download is disabled: {_where_to_put(cache_dir)}")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create the MNIST cache {cache_dir} ({one_line(exc)}): {_where_to_put(cache_dir)}"
        ) from None
    for name in IDX_FILES:
        if (cache_dir / f"{name}.gz").is_file() or (cache_dir / name).is_file():
            continue
        logger.info("downloading %s.gz into %s (up to %.0f s per mirror)", name, cache_dir, timeout)
        path, reasons, corrupt = _fetch_one(name, cache_dir, mirrors, checksums, timeout)
        if path is not None:
            continue
        if corrupt:
            raise DataError(f"{name}.gz: no mirror served a valid copy ({'; '.join(reasons)})")
        raise DataError(
            f"MNIST not found in {looked} and could not be downloaded ({reasons[-1]}): "
            f"{_where_to_put(cache_dir)}"
        )
    return cache_dir


def find_mnist(
    data_dir=None, *, cache_dir=None, mirrors=MIRRORS, download=True, checksums=None, timeout=60.0
):
    """Locate MNIST: a folder holding the four IDX files, or a ``mnist.pkl.gz``.

    Order: ``data_dir`` if given, else ``$UNTAPPED_DATA_DIR`` if set (either
    may be a folder or a pickle file; a folder counts if it holds all four
    IDX files, ``.gz`` or plain, or else ``mnist.pkl.gz``); then ``cache_dir``
    (default :func:`default_cache_dir`); then, if ``download``, a download
    from ``mirrors`` into ``cache_dir`` (:func:`download_mnist`). A given
    folder that does not exist is an error (most likely a typo), and so is
    one holding some but not all of the IDX files (the message names the
    missing ones); one without any of them falls through to the cache.
    Files are not read here: the loaders verify them.
    """
    checksums = SHA256 if checksums is None else checksums
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    explicit, origin = data_dir, "data_dir"
    if explicit is None and os.environ.get(ENV_VAR):
        explicit, origin = os.environ[ENV_VAR], ENV_VAR
    searched = []
    if explicit is not None:
        explicit = pathlib.Path(explicit).expanduser()
        if explicit.is_file():
            return explicit
        if not explicit.is_dir():
            raise DataError(f"{origin} {explicit} does not exist: {_where_to_put(cache_dir)}")
        if _idx_set(explicit) is not None:
            return explicit
        if (explicit / PICKLE_NAME).is_file():
            return explicit / PICKLE_NAME
        missing = _missing_idx(explicit)
        if len(missing) < len(IDX_FILES):
            # Some of the files are there: the set is incomplete, not elsewhere.
            raise DataError(
                f"{origin} {explicit} holds {len(IDX_FILES) - len(missing)} of the 4 MNIST IDX files; "
                f"missing {', '.join(name + '(.gz)' for name in missing)}"
            )
        searched.append(explicit)
    if _idx_set(cache_dir) is not None:
        return cache_dir
    searched.append(cache_dir)
    return _download(cache_dir, mirrors if download else (), checksums, timeout, searched)


def load_mnist(data_dir=None, **find_options):
    """All 70,000 MNIST images (float32 in [0, 1]) and digit labels (int64).

    The data are found by :func:`find_mnist` (``find_options`` are its
    keyword arguments) and read by :func:`load_idx_dir` or
    :func:`load_pickle`; both give the original's stacking order. Not
    binarised: see :func:`binarize` and :func:`load_binarized_mnist`.
    """
    checksums = find_options.get("checksums")
    location = find_mnist(data_dir, **find_options)
    if location.is_file():
        return load_pickle(location)
    return load_idx_dir(location, checksums=checksums)


def load_binarized_mnist(data_dir=None, **find_options):
    """All 70,000 binarised images (float32 0/1) with their digit labels.

    For the discriminative metric (``original_code.md`` §6.2), whose logistic
    regression is trained on the whole binarised dataset.
    """
    images, digits = load_mnist(data_dir, **find_options)
    return binarize(images), digits


# ---------------------------------------------------------------- the split


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
    """The arrays of the paper's MNIST task (``original_code.md`` §1.2-1.3).

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
        """The arrays under the names of the original ``SSDGM.fit`` (DEMO:33-42)."""
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
    num_unlabeled=20_000,
    unfeatured="corners",
    num_unfeatured=NUM_CLASSES,
    corner_peak=0.95,
    z_low=UNFEATURED_Z_BOX[0],
    z_high=UNFEATURED_Z_BOX[1],
):
    """Cut the stacked images into the paper's task (``original_code.md`` §1.2).

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
       (``z2``, DEMO:41);
    3. ``eval_unfeatured_z``, a second draw of the same shape (``z2_valid``,
       DEMO:42).

    Draws are float64, then cast to float32 like everything else here.

    Unfeatured labels: row k is class ``k % 10``, as
    ``unfeatured='corners'`` (the code: :func:`close_corners` with
    ``corner_peak``) or ``unfeatured='onehot'`` (the paper, whose
    unfeatured labels are one-hot vectors; ``original_code.md`` §7 item 11).
    ``num_unfeatured`` is 10 in the code; a larger value gives each of more
    rows its own z, nearer the paper's Algorithm 1, where every unfeatured
    y comes with a ``z ~ p(z)`` (§7 item 10).
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
    seed=1234,
    unfeatured="corners",
    num_unlabeled=20_000,
    num_unfeatured=NUM_CLASSES,
    corner_peak=0.95,
    cache_dir=None,
    mirrors=MIRRORS,
    download=True,
    checksums=None,
    timeout=60.0,
):
    """Find, read, binarise and split MNIST: the data of the DEMO run.

    ``seed`` seeds the split's draws (1234 is the seed the original used for
    everything it did seed); ``unfeatured``, ``num_unlabeled``,
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
