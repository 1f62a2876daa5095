"""untapped: a PyTensor port of "Inverting VAEs for Improved Generative Accuracy".

Importing the package loads Lasagne on PyTensor (see :mod:`untapped.backend`);
the estimator :class:`SSDGM` is imported on first use, so that the sampling
layers in :mod:`parmesan_compat` can build on the same backend.
"""

from untapped import backend

__version__ = "0.1.0"
__all__ = ["SSDGM", "backend", "__version__"]


def __getattr__(name):
    if name == "SSDGM":
        from untapped.model import SSDGM

        return SSDGM
    raise AttributeError(f"module 'untapped' has no attribute {name!r}")
