"""Where MNIST comes from: a given folder, the user cache, or a download into it; and loading it from there.

:func:`find_mnist` looks in an explicit folder (argument, else the
``UNTAPPED_DATA_DIR`` environment variable), then the user cache
(``$XDG_CACHE_HOME/untapped/mnist`` or ``~/.cache/untapped/mnist``), then
downloads into that cache from :data:`MIRRORS`, each file verified
(:mod:`untapped.data.reading`) before it is renamed into place. Every
failure is a :class:`~untapped.data.reading.DataError` with a one-line message.
"""

import http.client
import logging
import os
import pathlib
import shutil
import tempfile
import urllib.request

from untapped.data.reading import (
    GZIP_MAGIC,
    IDX_FILES,
    SHA256,
    DataError,
    binarize,
    idx_set,
    load_idx_dir,
    load_pickle,
    missing_idx,
    read_mnist_file,
)
from untapped.files import one_line

#: The download messages' logger (``run_mnist.py`` shows its INFO lines).
logger = logging.getLogger("untapped.data")

#: Base URLs tried in order for ``<name>.gz``; any scheme urllib opens works,
#: including ``file://`` (which is how the tests fake a mirror).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

#: The deeplearning.net pickle, found in a given folder (or given itself).
PICKLE_NAME = "mnist.pkl.gz"
#: The environment variable naming the MNIST folder (or pickle).
ENV_VAR = "UNTAPPED_DATA_DIR"


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
                read_mnist_file(tmp, name, checksums)
            except DataError as exc:
                corrupt = True
                reasons.append(f"{url}: {str(exc).replace(str(tmp), 'download')}")
                logger.warning("mirror %s served a bad %s.gz; trying the next mirror", mirror, name)
                continue
            with open(tmp, "rb") as f:
                is_gzip = f.read(2) == GZIP_MAGIC
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
        if idx_set(explicit) is not None:
            return explicit
        if (explicit / PICKLE_NAME).is_file():
            return explicit / PICKLE_NAME
        missing = missing_idx(explicit)
        if len(missing) < len(IDX_FILES):
            # Some of the files are there: the set is incomplete, not elsewhere.
            raise DataError(
                f"{origin} {explicit} holds {len(IDX_FILES) - len(missing)} of the 4 MNIST IDX files; "
                f"missing {', '.join(name + '(.gz)' for name in missing)}"
            )
        searched.append(explicit)
    if idx_set(cache_dir) is not None:
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

    For the discriminative metric (``docs/paper.md``, *The digits 5-9 metric*), whose logistic
    regression is trained on the whole binarised dataset.
    """
    images, digits = load_mnist(data_dir, **find_options)
    return binarize(images), digits
