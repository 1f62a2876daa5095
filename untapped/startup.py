"""Importing PyTensor: an environment it cannot start in is a one-line :class:`StartupError` naming the variable.

PyTensor reads its configuration when it is first imported: ``PYTENSOR_FLAGS``
and the file ``PYTENSORRC`` names (``base_compiledir=...``, as the README
suggests for moving the compile cache), and ``OMP_NUM_THREADS``. A value it
cannot use (a number that is not one, a cache folder that cannot be
created) ends that import, or the first look at the cache folder, in a
``TypeError`` or ``ValueError``.
:func:`import_pytensor` turns it into one line saying which variable to fix.
This module imports nothing heavy, so a command line can catch the error.
"""

import os

#: The environment variables PyTensor reads when it starts.
VARIABLES = ("PYTENSOR_FLAGS", "PYTENSORRC", "OMP_NUM_THREADS")


class StartupError(Exception):
    """PyTensor cannot start in this environment; one-line message naming the variable."""


def import_pytensor():
    """``pytensor``, imported; :class:`StartupError` if its configuration from the environment is unusable."""
    try:
        import pytensor

        pytensor.config.compiledir  # read lazily: creating the cache folder is where base_compiledir fails
    except (TypeError, ValueError, OSError) as exc:
        raise StartupError(_explain(exc)) from None
    return pytensor


def _explain(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not any(name in text for name in VARIABLES):
        set_here = [f"{name}={os.environ[name]}" for name in VARIABLES if os.environ.get(name)]
        text += f" (the environment sets {', '.join(set_here)})" if set_here else ""
    return f"PyTensor cannot start in this environment: {text}"
