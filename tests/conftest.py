"""Shared fixtures; the thread settings of the entry points (untapped.threads) apply to the tests too."""

import untapped

untapped.configure_threads()

import os  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


#: Deprecations (PyTensor's DeprecationWarning and FutureWarning, Python's) that
#: untapped's own code triggers fail the test that triggers them: the next
#: PyTensor release that drops an API we use shows up as a failing test at the
#: lock and at the newest version alike. Warnings raised in other packages'
#: code (Lasagne 0.1 has its own) are left to their owners.
OWN_DEPRECATIONS = [
    f"error::{category}:{package}(\\.|$)"
    for category in ("DeprecationWarning", "PendingDeprecationWarning", "FutureWarning")
    for package in ("untapped", "parmesan_compat", "run_mnist", "bench")
]


def pytest_configure(config):
    for line in OWN_DEPRECATIONS:
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the MNIST IDX files (CI: ../shared/data/mnist)."""
    path = pathlib.Path(os.environ.get("UNTAPPED_DATA_DIR", SHARED_MNIST))
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST IDX files not found in {path}; set UNTAPPED_DATA_DIR")
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private user cache (``XDG_CACHE_HOME``) for a test module's commands: its digit classifier is fitted once.

    It stands in for pytest's own ``cache`` fixture, which no test uses.
    """
    return tmp_path_factory.mktemp("cache")
