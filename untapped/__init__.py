"""untapped: a PyTensor port of "Inverting VAEs for Improved Generative Accuracy".

Importing the package loads Lasagne on PyTensor (see :mod:`untapped.backend`);
the estimator :class:`SSDGM` is imported on first use, so that the sampling
layers in :mod:`parmesan_compat` can build on the same backend.
"""

import os

# The training step alternates NumPy's OpenBLAS threads (the matrix products)
# and our OpenMP ops (the elementwise work) on the same cores. Idle threads of
# either would otherwise spin for up to ~0.1 s and halve the other's speed
# (README, Speed). Set before NumPy and libgomp start their threads; a user's
# own values win. OPENBLAS_THREAD_TIMEOUT (2**4 cycles of spinning) only takes
# effect when untapped is imported before NumPy, as run_mnist.py does.
THREAD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
for _name, _value in THREAD_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

from untapped import backend  # noqa: E402 - after the thread settings, which must precede NumPy

__version__ = "0.1.0"
__all__ = ["SSDGM", "backend", "__version__"]


def __getattr__(name):
    if name == "SSDGM":
        from untapped.model import SSDGM

        return SSDGM
    raise AttributeError(f"module 'untapped' has no attribute {name!r}")
