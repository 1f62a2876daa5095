"""MNIST for the untapped experiment: reading, finding, downloading, splitting.

The original code (``load_mnist.py:30-168`` and ``DEMO_mnist.py:24-42``)
read the deeplearning.net ``mnist.pkl.gz``, stacked its three parts into one
array of 70,000 images, binarised them with ``np.round`` and cut that stack into the
paper's task. This package reproduces that data exactly, from either the
four IDX files or the old pickle, in three modules:

* :mod:`untapped.data.reading`: the files, read and verified (sha256 of the
  decompressed IDX content), stacked in the original's order, binarised;
* :mod:`untapped.data.source`: where they are (a given folder,
  ``UNTAPPED_DATA_DIR``, the user cache) or a download from the mirrors;
* :mod:`untapped.data.split`: the paper's task, :class:`MNISTSplit`, cut by
  :func:`make_split` with seeded draws.

Every name is importable from ``untapped.data`` itself. Every failure is a
:class:`DataError` with a one-line message.
"""

from untapped.data.reading import (
    GZIP_MAGIC,
    IDX_FILES,
    IDX_RECORDS,
    NUM_CLASSES,
    NUM_PIXELS,
    PKL_TRAIN_SIZE,
    SHA256,
    DataError,
    binarize,
    load_idx_dir,
    load_pickle,
    read_idx,
    read_mnist_file,
)
from untapped.data.source import (
    ENV_VAR,
    MIRRORS,
    PICKLE_NAME,
    default_cache_dir,
    download_mnist,
    find_mnist,
    load_binarized_mnist,
    load_mnist,
)
from untapped.data.split import LABELED_DIGITS, UNFEATURED_Z_BOX, MNISTSplit, close_corners, load_split, make_split

__all__ = [
    "ENV_VAR",
    "GZIP_MAGIC",
    "IDX_FILES",
    "IDX_RECORDS",
    "LABELED_DIGITS",
    "MIRRORS",
    "NUM_CLASSES",
    "NUM_PIXELS",
    "PICKLE_NAME",
    "PKL_TRAIN_SIZE",
    "SHA256",
    "UNFEATURED_Z_BOX",
    "DataError",
    "MNISTSplit",
    "binarize",
    "close_corners",
    "default_cache_dir",
    "download_mnist",
    "find_mnist",
    "load_binarized_mnist",
    "load_idx_dir",
    "load_mnist",
    "load_pickle",
    "load_split",
    "make_split",
    "read_idx",
    "read_mnist_file",
]
