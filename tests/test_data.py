"""Tests of untapped.data: reading, binarisation, the split, and finding/downloading.

The real MNIST files (fixture ``mnist_dir``) are read once per session; every
file these tests write is synthetic and lives under pytest's tmp_path.
"""

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest

from untapped import data
from untapped.data import DataError

LABELED_COUNTS = {0: 6903, 1: 7877, 2: 6990, 3: 7141, 4: 6824}
EVAL_COUNTS = {5: 6313, 6: 6876, 7: 7293, 8: 6825, 9: 6958}


# ------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def stack(mnist_dir, tmp_path_factory):
    """(images float32, digits) of all 70k, read through the module."""
    cache = tmp_path_factory.mktemp("cache")
    return data.load_mnist(mnist_dir, cache_dir=cache, download=False)


@pytest.fixture(scope="session")
def raw_idx(mnist_dir):
    """The four IDX files decoded independently of the module under test."""
    out = {}
    for name in data.IDX_FILES:
        raw = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        offset = 16 if "images" in name else 8
        out[name] = np.frombuffer(raw, np.uint8, offset=offset)
    out["train-images-idx3-ubyte"] = out["train-images-idx3-ubyte"].reshape(-1, 784)
    out["t10k-images-idx3-ubyte"] = out["t10k-images-idx3-ubyte"].reshape(-1, 784)
    return out


@pytest.fixture(scope="session")
def binarized(stack):
    return data.binarize(stack[0])


@pytest.fixture(scope="session")
def split(binarized, stack):
    return data.make_split(binarized, stack[1], seed=1234)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)


def idx_bytes(array, magic=None):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x0800 + array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


@pytest.fixture
def tiny():
    """A tiny synthetic MNIST (3 train, 2 test records) and its checksums."""
    rng = np.random.default_rng(0)
    contents = {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (3, 28, 28))),
        "train-labels-idx1-ubyte": idx_bytes(np.array([5, 0, 4])),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (2, 28, 28))),
        "t10k-labels-idx1-ubyte": idx_bytes(np.array([7, 2])),
    }
    checksums = {name: hashlib.sha256(raw).hexdigest() for name, raw in contents.items()}
    return contents, checksums


def write_mirror(folder, contents, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in contents.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder.as_uri() + "/"


# ------------------------------------------------------------ the split


def test_split_sizes_and_digit_counts(split):
    assert split.sizes() == {"labeled": 35735, "eval": 34265, "unlabeled": 20000, "unfeatured": 10}
    assert dict(zip(*np.unique(split.labeled_digits, return_counts=True))) == LABELED_COUNTS
    assert dict(zip(*np.unique(split.eval_digits, return_counts=True))) == EVAL_COUNTS
    assert "0:6903" in split.summary() and "9:6958" in split.summary()


def test_split_contents(split, binarized, stack):
    digits = stack[1]
    assert np.array_equal(split.labeled_index, np.flatnonzero(digits < 5))
    assert np.array_equal(split.eval_index, np.flatnonzero(digits >= 5))
    assert np.array_equal(split.labeled_x, binarized[digits < 5])
    assert np.array_equal(split.eval_x, binarized[digits >= 5])
    assert np.array_equal(split.labeled_y.argmax(1), split.labeled_digits)
    assert np.array_equal(split.eval_y.argmax(1), split.eval_digits)
    assert np.array_equal(split.labeled_y.sum(1), np.ones(35735))
    assert np.array_equal(split.unlabeled_x, binarized[split.unlabeled_index])
    assert split.unlabeled_index.min() >= 0 and split.unlabeled_index.max() < 70000
    # with replacement: 20k draws from 70k repeat some rows (~2.6k expected)
    assert len(np.unique(split.unlabeled_index)) < 20000
    for name in ("labeled_x", "labeled_y", "eval_x", "eval_y", "unlabeled_x",
                 "unfeatured_y", "unfeatured_z", "eval_unfeatured_z"):
        assert getattr(split, name).dtype == np.float32, name
    assert split.eval_unlabeled_x is split.unlabeled_x
    assert split.eval_unfeatured_y is split.unfeatured_y


def test_fit_data_uses_the_original_names(split):
    fit = split.as_fit_data()
    assert fit["X"] is split.labeled_x and fit["X_"] is split.unlabeled_x
    assert fit["X__valid"] is fit["X_"] and fit["_y_valid"] is fit["_y"]
    assert fit["z2"] is split.unfeatured_z and fit["z2_valid"] is split.eval_unfeatured_z


def test_seeding(split, binarized, stack):
    again = data.make_split(binarized, stack[1], seed=1234)
    for field in ("unlabeled_index", "unlabeled_x", "unfeatured_y", "unfeatured_z",
                  "eval_unfeatured_z", "labeled_x", "labeled_y", "eval_x"):
        assert np.array_equal(getattr(split, field), getattr(again, field)), field
    other = data.make_split(binarized, stack[1], seed=1235)
    assert not np.array_equal(split.unlabeled_index, other.unlabeled_index)
    assert not np.array_equal(split.unfeatured_z, other.unfeatured_z)
    assert not np.array_equal(split.eval_unfeatured_z, other.eval_unfeatured_z)
    # the documented order of the draws
    rng = np.random.default_rng(1234)
    assert np.array_equal(split.unlabeled_index, rng.integers(0, 70000, size=20000))
    assert np.array_equal(split.unfeatured_z, rng.uniform(-1.5, 1.5, (10, 2)).astype(np.float32))
    assert np.array_equal(split.eval_unfeatured_z, rng.uniform(-1.5, 1.5, (10, 2)).astype(np.float32))


def test_close_corners_and_z(split):
    rest = np.float32(0.05 / 9)
    expected = np.full((10, 10), rest, np.float32)
    np.fill_diagonal(expected, np.float32(0.95))
    assert np.allclose(split.unfeatured_y, expected, rtol=0, atol=1e-7)
    assert np.allclose(split.unfeatured_y.sum(1), 1, rtol=0, atol=1e-6)
    assert np.array_equal(split.unfeatured_y.argmax(1), np.arange(10))
    for z in (split.unfeatured_z, split.eval_unfeatured_z):
        assert z.shape == (10, 2)
        assert z.min() >= -1.5 and z.max() <= 1.5
    assert not np.allclose(split.unfeatured_z, split.eval_unfeatured_z)


def test_unfeatured_variants():
    images = np.zeros((30, 784), np.float32)
    digits = np.arange(30) % 10
    onehot = data.make_split(images, digits, seed=0, num_unlabeled=5, unfeatured="onehot")
    assert np.array_equal(onehot.unfeatured_y, np.eye(10, dtype=np.float32))
    assert onehot.unfeatured == "onehot"
    many = data.make_split(images, digits, seed=0, num_unlabeled=5, num_unfeatured=25)
    assert many.unfeatured_y.shape == (25, 10) and many.unfeatured_z.shape == (25, 2)
    assert np.array_equal(many.unfeatured_y.argmax(1), np.arange(25) % 10)
    # the variant does not change the random draws
    corners = data.make_split(images, digits, seed=0, num_unlabeled=5)
    assert np.array_equal(corners.unfeatured_z, onehot.unfeatured_z)
    with pytest.raises(ValueError, match="unfeatured"):
        data.make_split(images, digits, seed=0, unfeatured="fuzzy")


# ------------------------------------------------------------ reading


def test_stacking_order(stack, raw_idx):
    images, digits = stack
    assert images.shape == (70000, 784) and images.dtype == np.float32
    assert digits.shape == (70000,) and digits.dtype == np.int64
    train, test = raw_idx["train-images-idx3-ubyte"], raw_idx["t10k-images-idx3-ubyte"]
    train_y, test_y = raw_idx["train-labels-idx1-ubyte"], raw_idx["t10k-labels-idx1-ubyte"]
    for row, source, index, labels in ((0, train, 50000, train_y), (9999, train, 59999, train_y),
                                       (10000, test, 0, test_y), (19999, test, 9999, test_y),
                                       (20000, train, 0, train_y), (69999, train, 49999, train_y)):
        assert np.array_equal(images[row], source[index] / 256.0), row
        assert digits[row] == labels[index], row
    assert images.max() == np.float32(255 / 256)


def test_binarize_rule():
    values = np.array([[0, 1, 127, 128, 129, 130, 255]]) / 256
    assert np.array_equal(data.binarize(values), [[0, 0, 0, 0, 1, 1, 1]])
    assert np.array_equal(data.binarize([0.5, 0.5000001, 1.0]), [0, 1, 1])
    every_byte = np.arange(256, dtype=np.uint8)
    assert np.array_equal(data.binarize(every_byte / np.float32(256)), every_byte > 128)
    assert data.binarize(values).dtype == np.float32


def test_binarized_fraction(binarized):
    assert abs(binarized.mean() - 0.1309) <= 0.0001
    assert set(np.unique(binarized)) == {0.0, 1.0}


def test_load_binarized_mnist(mnist_dir, tmp_path, binarized, stack):
    images, digits = data.load_binarized_mnist(mnist_dir, cache_dir=tmp_path, download=False)
    assert np.array_equal(images, binarized) and np.array_equal(digits, stack[1])


def test_plain_idx_files(mnist_dir, tmp_path, stack):
    for name in data.IDX_FILES:
        (tmp_path / name).write_bytes(gzip.decompress((mnist_dir / f"{name}.gz").read_bytes()))
    images, digits = data.load_idx_dir(tmp_path)
    assert np.array_equal(images, stack[0]) and np.array_equal(digits, stack[1])


def write_pickle(path, parts, protocol=2, python2_names=False):
    raw = pickle.dumps(parts, protocol=protocol)
    if python2_names:
        # how NumPy 1.x named its reconstructor in the 2009-era file
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(gzip.compress(raw))


def tiny_pickle_parts():
    def part(first, n):
        x = (np.arange(n * 784).reshape(n, 784) % 256 / 256).astype(np.float32)
        x[:, 0] = np.arange(first, first + n) / 256
        return x, np.arange(first, first + n) % 10

    return part(0, 5), part(100, 3), part(200, 2)  # train, valid, test


@pytest.mark.parametrize("protocol,python2_names", [(2, False), (2, True), (5, False)])
def test_pickle_order(tmp_path, protocol, python2_names):
    path = tmp_path / "mnist.pkl.gz"
    write_pickle(path, tiny_pickle_parts(), protocol, python2_names)
    images, digits = data.load_pickle(path)
    assert images.dtype == np.float32 and digits.dtype == np.int64
    assert np.array_equal(images[:, 0] * 256, [100, 101, 102, 200, 201, 0, 1, 2, 3, 4])
    assert np.array_equal(digits, [0, 1, 2, 0, 1, 0, 1, 2, 3, 4])


def test_pickle_found_in_data_dir(tmp_path, no_env):
    write_pickle(tmp_path / "mnist.pkl.gz", tiny_pickle_parts())
    images, _ = data.load_mnist(tmp_path, cache_dir=tmp_path / "cache", download=False)
    assert images.shape == (10, 784)


def test_pickle_refuses_code(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(b"cos\nsystem\n(S'echo pwned'\ntR."))
    with pytest.raises(DataError, match="mnist.pkl.gz.*refusing to load os.system"):
        data.load_pickle(path)


def test_pickle_with_wrong_structure(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    train, valid, test = tiny_pickle_parts()
    write_pickle(path, (train, valid, (test[0] * 2, test[1])))
    with pytest.raises(DataError, match=r"mnist.pkl.gz: test images outside \[0, 1\]"):
        data.load_pickle(path)
    write_pickle(path, (train, valid))
    with pytest.raises(DataError, match="three"):
        data.load_pickle(path)


def test_idx_header_validation(tmp_path):
    images = np.zeros((2, 28, 28))
    cases = {
        "bad-magic": b"\x01" + idx_bytes(images)[1:],
        "bad-type": idx_bytes(images, magic=0x0903),
        "short": idx_bytes(images)[:-1],
        "long": idx_bytes(images) + b"\x00",
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DataError, match=name):
            data.read_idx(tmp_path / name)
    # labels magic where images are expected
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(DataError, match="magic 0x00000801, expected 0x00000803"):
        data.read_mnist_file(tmp_path / "train-images-idx3-ubyte", "train-images-idx3-ubyte", {})


def test_local_truncated_and_wrong_checksum(tmp_path, tiny):
    contents, checksums = tiny
    write_mirror(tmp_path, contents)
    gz = tmp_path / "train-images-idx3-ubyte.gz"
    good = gz.read_bytes()
    gz.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: corrupt or truncated gzip") as err:
        data.load_idx_dir(tmp_path, checksums=checksums)
    assert "\n" not in str(err.value)
    gz.write_bytes(good)
    wrong = dict(checksums, **{"train-images-idx3-ubyte": "0" * 64})
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: sha256 of the decompressed content"):
        data.load_idx_dir(tmp_path, checksums=wrong)
    # the real checksums reject synthetic files
    with pytest.raises(DataError, match="sha256"):
        data.load_idx_dir(tmp_path)


def test_idx_record_counts_are_checked(tmp_path, tiny):
    contents, checksums = tiny
    write_mirror(tmp_path, contents)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: 3 records, expected 60000"):
        data.load_idx_dir(tmp_path, checksums=checksums)


# ------------------------------------------------------------ finding and downloading


def test_download_from_file_mirror(tmp_path, tiny, no_env):
    contents, checksums = tiny
    mirror = write_mirror(tmp_path / "mirror", contents)
    cache = tmp_path / "cache"
    found = data.find_mnist(cache_dir=cache, mirrors=[mirror], checksums=checksums)
    assert found == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in data.IDX_FILES)
    for name, raw in contents.items():
        assert gzip.decompress((cache / f"{name}.gz").read_bytes()) == raw
    # a second look finds the cache without any mirror
    assert data.find_mnist(cache_dir=cache, mirrors=(), checksums=checksums) == cache


def test_download_says_what_it_fetches_before_it_waits(tmp_path, tiny, no_env, caplog):
    contents, checksums = tiny
    mirror = write_mirror(tmp_path / "mirror", contents)
    with caplog.at_level("INFO", logger="untapped.data"):
        data.find_mnist(cache_dir=tmp_path / "cache", mirrors=[mirror], checksums=checksums, timeout=7)
    first = caplog.records[0].getMessage()
    assert first.startswith("downloading train-images-idx3-ubyte.gz into") and "(up to 7 s per mirror)" in first


def test_download_fetches_only_missing_files(tmp_path, tiny):
    contents, checksums = tiny
    mirror = write_mirror(tmp_path / "mirror", contents)
    cache = tmp_path / "cache"
    write_mirror(cache, {"train-labels-idx1-ubyte": contents["train-labels-idx1-ubyte"]}, gz=False)
    data.download_mnist(cache, mirrors=[mirror], checksums=checksums)
    assert (cache / "train-labels-idx1-ubyte").exists()
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert (cache / "train-images-idx3-ubyte.gz").exists()


def test_corrupt_first_mirror_falls_back_to_second(tmp_path, tiny, caplog):
    contents, checksums = tiny
    bad = write_mirror(tmp_path / "bad", contents)
    gz = tmp_path / "bad" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-20])
    good = write_mirror(tmp_path / "good", contents)
    cache = tmp_path / "cache"
    data.download_mnist(cache, mirrors=[bad, good], checksums=checksums)
    got = gzip.decompress((cache / "train-images-idx3-ubyte.gz").read_bytes())
    assert got == contents["train-images-idx3-ubyte"]
    assert "served a bad train-images-idx3-ubyte.gz" in caplog.text
    assert not list(cache.glob(".*part"))


def test_truncated_download_raises(tmp_path, tiny):
    contents, checksums = tiny
    mirror = write_mirror(tmp_path / "mirror", contents)
    gz = tmp_path / "mirror" / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-5])
    cache = tmp_path / "cache"
    expected = "t10k-labels-idx1-ubyte.gz: no mirror served a valid copy.*truncated"
    with pytest.raises(DataError, match=expected) as err:
        data.download_mnist(cache, mirrors=[mirror], checksums=checksums)
    assert "\n" not in str(err.value)
    assert not (cache / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(cache.glob(".*part"))


def test_wrong_checksum_download_raises(tmp_path, tiny):
    contents, checksums = tiny
    mirror = write_mirror(tmp_path / "mirror", contents)
    wrong = dict(checksums, **{"train-labels-idx1-ubyte": "f" * 64})
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: no mirror served a valid copy.*sha256"):
        data.download_mnist(tmp_path / "cache", mirrors=[mirror], checksums=wrong)
    assert not (tmp_path / "cache" / "train-labels-idx1-ubyte.gz").exists()


def test_offline_without_files(tmp_path, no_env):
    unreachable = (tmp_path / "nowhere").as_uri() + "/"
    for kwargs in ({"mirrors": [unreachable, unreachable]}, {"download": False}):
        with pytest.raises(DataError) as err:
            data.load_split(cache_dir=tmp_path / "cache", **kwargs)
        message = str(err.value)
        assert "\n" not in message
        assert "UNTAPPED_DATA_DIR" in message and "--data-dir" in message
        assert all(f"{name}.gz" in message for name in data.IDX_FILES)
        assert str(tmp_path / "cache") in message


def test_lookup_order(tmp_path, tiny, monkeypatch):
    contents, checksums = tiny
    from_env = tmp_path / "env"
    from_arg = tmp_path / "arg"
    cache = tmp_path / "cache"
    write_mirror(from_env, contents)
    write_mirror(from_arg, contents, gz=False)
    write_mirror(cache, contents)
    monkeypatch.setenv(data.ENV_VAR, str(from_env))
    assert data.find_mnist(from_arg, cache_dir=cache, mirrors=()) == from_arg
    assert data.find_mnist(cache_dir=cache, mirrors=()) == from_env
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(empty))
    assert data.find_mnist(cache_dir=cache, mirrors=()) == cache
    with pytest.raises(DataError, match="data_dir .*typo does not exist"):
        data.find_mnist(tmp_path / "typo", cache_dir=cache, mirrors=())
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(DataError, match="UNTAPPED_DATA_DIR .*typo does not exist"):
        data.find_mnist(cache_dir=cache, mirrors=())


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_cache_dir() == tmp_path / "untapped" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "untapped" / "mnist"
