"""Shared fixtures; the thread settings of the entry points (untapped.threads) apply to the tests too."""

import untapped

untapped.configure_threads()

import os  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def pytest_configure(config):
    if not any(line.split(":")[0].strip() == "slow" for line in config.getini("markers")):
        config.addinivalue_line("markers", "slow: a case that takes long (waits out a real timeout); deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the MNIST IDX files (CI: ../shared/data/mnist)."""
    path = pathlib.Path(os.environ.get("UNTAPPED_DATA_DIR", SHARED_MNIST))
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST IDX files not found in {path}; set UNTAPPED_DATA_DIR")
    return path


def pytest_configure(config):
    """The ``slow`` marker: tests that take minutes (CI runs them; ``-m "not slow"`` leaves them out)."""
    if not any(line.split(":")[0].strip() == "slow" for line in config.getini("markers")):
        config.addinivalue_line("markers", "slow: takes minutes; CI runs it, -m 'not slow' leaves it out")
