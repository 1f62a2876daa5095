import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the MNIST IDX files (CI: ../shared/data/mnist)."""
    path = pathlib.Path(os.environ.get("UNTAPPED_DATA_DIR", SHARED_MNIST))
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST IDX files not found in {path}; set UNTAPPED_DATA_DIR")
    return path
