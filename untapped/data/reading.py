"""The MNIST files, read and verified: the four IDX files or the old ``mnist.pkl.gz``.

The original code (``load_mnist.py:38, 108-126``) read the deeplearning.net
pickle and stacked its three parts into one array of 70,000 images. The IDX files (the form in which MNIST is
distributed today) are stacked in the pickle's order, ``train[50000:60000]``
(the pickle's "valid"), then ``t10k`` (its "test"), then ``train[0:50000]``
(its "train"), and scaled by 1/256 (which is what the pickle is understood
to store), so both sources give the same arrays; :func:`binarize` then
rounds them as the original did.

Every IDX file is checked against the sha256 of its *decompressed* content
(:data:`SHA256`), wherever it came from, each time it is read; the check
costs about 0.04 s for the 47 MB training images, small next to
decompression, so no record of earlier checks is kept. Every failure is a
:class:`DataError` with a one-line message.
"""

import gzip
import hashlib
import pathlib
import pickle
import struct
import zlib

import numpy as np

from untapped.files import one_line

#: The four IDX files by their decompressed names.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: sha256 of the decompressed IDX content;
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

NUM_PIXELS = 28 * 28
NUM_CLASSES = 10

_IDX_MAGIC = {"images": 0x0803, "labels": 0x0801}
#: The first bytes of a gzip file.
GZIP_MAGIC = b"\x1f\x8b"


class DataError(Exception):
    """Any failure to find, fetch or read MNIST; the message is one line."""


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
    if raw[:2] == GZIP_MAGIC:
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


def read_mnist_file(path, name, checksums):
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


def missing_idx(folder):
    """The IDX files (by their decompressed names) that ``folder`` holds neither plain nor gzipped."""
    return [name for name in IDX_FILES if not (folder / f"{name}.gz").is_file() and not (folder / name).is_file()]


def idx_set(folder):
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
    ``[70000]``, stacked like the original (``load_mnist.py:112``):
    ``train[50000:60000]``, ``t10k``, ``train[0:50000]``. Each file is
    verified against ``checksums`` (default :data:`SHA256`) and the record
    counts against :data:`IDX_RECORDS`.
    """
    folder = pathlib.Path(folder)
    checksums = SHA256 if checksums is None else checksums
    paths = idx_set(folder)
    if paths is None:
        raise DataError(f"{folder}: missing MNIST IDX file(s) {', '.join(missing_idx(folder))} (.gz or plain)")
    parts = {}
    for prefix, records in IDX_RECORDS.items():
        pair = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{prefix}-{kind}"
            array = read_mnist_file(paths[name], name, checksums)
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
    ``load_mnist.py:112, 121``. There is no published
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
    (``load_mnist.py:113-114``). Returns float32 zeros and ones.
    """
    return np.round(np.asarray(images, dtype=np.float32))
