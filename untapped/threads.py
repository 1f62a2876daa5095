"""The thread settings the training step's speed needs, made only when asked.

The training step alternates NumPy's OpenBLAS threads (the matrix products)
and the C mode's OpenMP kernels (the elementwise work) on the same cores.
Idle threads of either would otherwise spin for up to ~0.1 s and halve the
other's speed (``docs/speed.md``, *What makes it fast*). The libraries read these variables once,
when they start their threads, so they must be set before NumPy is imported.

The entry points (``run_mnist.py``, ``bench/epoch_time.py``,
``untapped-reference``) call :func:`configure_threads` first thing; a library
user calls it before importing NumPy::

    import untapped
    untapped.configure_threads()
    import numpy as np

The user's own values of the variables win. Importing :mod:`untapped` does
not call it.
"""

import os
import sys

#: The variables and the values :func:`configure_threads` gives them when unset.
THREAD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}


def configure_threads():
    """Set :data:`THREAD_ENVIRONMENT`'s variables that are unset; return whether NumPy was still unloaded.

    ``False`` means NumPy was imported first: OpenBLAS has then read its
    settings already, and only OpenMP's (read when the first kernel runs)
    take effect.
    """
    for name, value in THREAD_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    return "numpy" not in sys.modules
