"""untapped: a PyTensor port of "Inverting VAEs for Improved Generative Accuracy".

Two layers (``docs/architecture.md``): :mod:`untapped.paper`, the model as the
paper writes it, and :mod:`untapped.fast`, the kernels and rewrites of the
default compile mode. The estimator :class:`SSDGM` is imported on first use.
Comments cite the original code as ``FILE:LINE`` at github all-umass/untapped,
commit 30e90ab (``docs/original.md``), and the paper's equations by number
(``docs/paper.md``).

Importing the package changes nothing in the process: no environment
variable, no PyTensor rewrite, no PyTensor or Lasagne loaded. Lasagne loads
(on PyTensor, :func:`parmesan_compat.backend.load_lasagne`) when a module
that defines layers is imported: :mod:`untapped.paper.layers`,
:mod:`untapped.paper.networks`, :mod:`parmesan_compat.layers`, and with
them :mod:`untapped.model`, which
the first use of ``untapped.SSDGM`` imports. For the training step's full
speed, call :func:`configure_threads` before NumPy is imported
(:mod:`untapped.threads`).
"""

from untapped.threads import configure_threads

__version__ = "0.1.0"
__all__ = ["SSDGM", "configure_threads", "__version__"]


def __getattr__(name):
    if name == "SSDGM":
        from untapped.model import SSDGM

        return SSDGM
    raise AttributeError(f"module 'untapped' has no attribute {name!r}")
