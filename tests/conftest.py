"""Shared fixtures; the thread settings of the entry points (untapped.threads) apply to the tests too."""

import untapped

untapped.configure_threads()

import os  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the MNIST IDX files (CI: ../shared/data/mnist)."""
    path = pathlib.Path(os.environ.get("UNTAPPED_DATA_DIR", SHARED_MNIST))
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST IDX files not found in {path}; set UNTAPPED_DATA_DIR")
    return path
