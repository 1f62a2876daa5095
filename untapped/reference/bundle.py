"""The bundle as a file: its format name and version, writing one, opening and reading one.

A bundle is an HDF5 file whose root attributes ``format`` and
``format_version`` say what it is (``docs/reference_format.md`` §2). Its
*items* are its datasets by name (``forward/labeled/logits``, no leading
slash), and the groups of gradient entries a port may give instead of a
whole gradient (attribute ``form = "entries"``, §6.3), each as one item.
"""

import os
import pathlib
import tempfile
from collections import OrderedDict

import h5py
import numpy as np

from untapped.files import atomic_output, one_line

FORMAT = "untapped-reference"
FORMAT_VERSION = 2
#: Versions this code reads: version 1 is version 2 without the ``edge/`` section.
READABLE_VERSIONS = (1, 2)

#: What an HDF5 read may raise on a damaged or unexpected file.
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


class BundleError(Exception):
    """A bundle that cannot be written, read or compared; the message is one line."""


# ---------------------------------------------------------------------------
# Writing


def check_writable(path):
    """Raise :class:`BundleError` unless a file can be created beside ``path`` (before any computing)."""
    path = pathlib.Path(path)
    parent = path.parent
    if path.is_dir():
        raise BundleError(f"{path}: is a folder; give the bundle's file name")
    if not parent.is_dir():
        raise BundleError(f"{path}: cannot write there: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise BundleError(f"{path}: cannot write there ({one_line(exc)})") from None
    os.close(fd)
    os.unlink(probe)


def write_bundle(path, datasets, attrs=None, root=None, group_attrs=None):
    """Write ``datasets`` (name -> array) with their attributes to ``path`` (temporary file, then rename).

    ``attrs`` maps dataset names to their attributes, ``root`` holds the root
    attributes and ``group_attrs`` maps group names to theirs. Groups keep
    insertion order; no timestamps are stored, so two exports with the same
    arguments write the same bytes.
    """
    path = pathlib.Path(path)
    attrs, root, group_attrs = attrs or {}, root or {}, group_attrs or {}
    try:
        with atomic_output(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
            f.attrs.update(root)
            for name, value in datasets.items():
                parent = _group(f, name.rsplit("/", 1)[0]) if "/" in name else f
                ds = parent.create_dataset(name.rsplit("/", 1)[-1], data=value, track_times=False, track_order=True)
                ds.attrs.update(attrs.get(name, {}))
            for name, values in group_attrs.items():
                if name in f:
                    f[name].attrs.update(values)
    except OSError as exc:
        raise BundleError(f"{path}: cannot write the bundle ({one_line(exc)})") from None
    return path


def _group(f, name):
    """The group ``name`` of ``f``, created (in insertion order) where it does not exist."""
    group = f
    for part in name.split("/"):
        group = group[part] if part in group else group.create_group(part, track_order=True)
    return group


# ---------------------------------------------------------------------------
# Reading


class Bundle:
    """An open bundle: its root attributes and its items (datasets, and gradient entry groups)."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.file = _open(self.path)
        try:
            self.attrs = {k: attr_value(v) for k, v in self.file.attrs.items()}
            self.items = _items(self.file)
        except BundleError:
            self.file.close()
            raise
        except _READ_ERRORS as exc:
            self.file.close()
            raise BundleError(f"{self.path}: unreadable bundle ({one_line(exc)})") from None

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
        except _READ_ERRORS as exc:
            raise BundleError(f"{self.path}: cannot read {name} ({one_line(exc)})") from None


def _open(path):
    """``path`` opened read-only, if it is an HDF5 file holding a bundle of a readable version."""
    if not path.exists():
        raise BundleError(f"{path}: no such file")
    if path.is_dir():
        raise BundleError(f"{path}: is a folder, not a bundle")
    try:
        is_hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise BundleError(f"{path}: cannot read ({one_line(exc)})") from None
    if not is_hdf5:
        raise BundleError(f"{path}: not an HDF5 file, so not a reference bundle")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise BundleError(f"{path}: truncated or corrupt HDF5 file ({one_line(exc)})") from None
    try:
        _check_format(path, f.attrs)
    except BundleError:
        f.close()
        raise
    return f


def _check_format(path, attrs):
    fmt, version = attr_value(attrs.get("format")), attr_value(attrs.get("format_version"))
    if fmt != FORMAT:
        what = "no 'format' attribute" if fmt is None else f"format {fmt!r}"
        raise BundleError(f"{path}: an HDF5 file but not an untapped reference bundle ({what})")
    if version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise BundleError(f"{path}: reference format version {version}; this untapped reads versions {readable}")


def attr_value(value):
    """An HDF5 attribute as Python: bytes decoded, NumPy scalars as Python numbers, arrays as they are."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_entries(obj):
    """Whether ``obj`` is a group of gradient entries (attribute ``form = "entries"``, §6.3)."""
    return isinstance(obj, h5py.Group) and attr_value(obj.attrs.get("form")) == "entries"


def _items(f):
    """Every dataset by name (no leading slash), with entry groups as one item each."""
    items = OrderedDict()

    def walk(group, prefix):
        for key, obj in group.items():
            name = f"{prefix}{key}"
            if is_entries(obj) or isinstance(obj, h5py.Dataset):
                items[name] = obj
            elif isinstance(obj, h5py.Group):
                walk(obj, name + "/")

    walk(f, "")
    return items
