"""What differs between the PyTensor versions untapped runs on: the speed layer asks here, nowhere else.

untapped is tested on PyTensor from :data:`TESTED_LOWEST` up to, not
including, :data:`UNTESTED_FROM`. Across that range the paper layer's API
(``pytensor.tensor``, ``pytensor.function``, shared variables, ``grad``) is
stable; the speed layer reaches further in, and two of the things it uses
changed:

- ``Op.infer_shape``: PyTensor up to 3.0 calls it as
  ``infer_shape(fgraph, node, shapes)``; later versions as
  ``infer_shape(node, shapes)`` and warn that ``fgraph`` is deprecated.
  Our ops write the new signature and wear :func:`infer_shape`, which adds
  the old one's parameter where PyTensor still passes it.
- The row gather ``x[rows]``: PyTensor up to 3.0 specialises it to its own
  op, ``AdvancedSubtensor1``; later versions removed that op and keep the
  general ``AdvancedSubtensor`` with one integer index.
  :data:`ROW_GATHER_OPS` and :func:`row_gather_operands` find it in either.

Each difference is told by what PyTensor has, not by its version number,
so a release inside the range that backports or drops a change still gets
the right code. The version number serves one purpose only: a PyTensor
outside the range gets :func:`untested_message` (see
:func:`untapped.backend.resolve_mode`, which then checks that the C mode
still works, or falls back to the plain mode).
"""

import inspect
import re

import pytensor
from pytensor.tensor import subtensor
from pytensor.tensor.shape import Shape

#: The oldest PyTensor release untapped is tested on (the lock, ``requirements.txt``).
TESTED_LOWEST = (3, 0, 7)
#: The first PyTensor release untapped is not tested on.
UNTESTED_FROM = (3, 4)

#: The tested range as a requirement specifier.
TESTED_RANGE = f">={'.'.join(map(str, TESTED_LOWEST))},<{'.'.join(map(str, UNTESTED_FROM))}"


def release(version):
    """The leading numbers of a version string: '3.3.8' -> (3, 3, 8), '3.4.0rc1' -> (3, 4, 0)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def in_tested_range(version=None):
    """Whether the PyTensor ``version`` (default: the one imported) is one untapped is tested on."""
    numbers = release(version or pytensor.__version__)
    return TESTED_LOWEST <= numbers < UNTESTED_FROM


def untested_message(version=None):
    """The one line said about a PyTensor outside the tested range; None inside it."""
    version = version or pytensor.__version__
    if in_tested_range(version):
        return None
    return f"PyTensor {version} is outside the range untapped is tested on (pytensor{TESTED_RANGE})"


# -- infer_shape ---------------------------------------------------------------

#: Whether PyTensor passes ``fgraph`` to ``infer_shape`` (told by its own ``Shape`` op's signature).
INFER_SHAPE_TAKES_FGRAPH = "fgraph" in inspect.signature(Shape.infer_shape).parameters


def infer_shape(method):
    """Decorator for ``infer_shape(self, node, shapes)``: PyTensor's signature, whichever it is."""
    if not INFER_SHAPE_TAKES_FGRAPH:
        return method

    def infer_shape(self, fgraph, node, shapes):
        return method(self, node, shapes)

    infer_shape.__doc__ = method.__doc__
    return infer_shape


# -- row gathers ---------------------------------------------------------------

_ADVANCED_SUBTENSOR1 = getattr(subtensor, "AdvancedSubtensor1", None)

#: The op classes whose nodes may be the row gather ``x[rows]``.
ROW_GATHER_OPS = (_ADVANCED_SUBTENSOR1,) if _ADVANCED_SUBTENSOR1 is not None else (subtensor.AdvancedSubtensor,)

#: ``AdvancedSubtensor``'s index list for ``x[rows]`` and ``x[rows, :]``: the first
#: index variable on axis 0, every other axis whole.
_ROWS_INDEX_LISTS = ((0,), (0, slice(None, None, None)))


def row_gather_operands(node):
    """``(x, rows)`` when ``node`` (of an op in :data:`ROW_GATHER_OPS`) picks whole rows ``x[rows]`` by one
    integer vector, else None."""
    if _ADVANCED_SUBTENSOR1 is None and tuple(getattr(node.op, "idx_list", ())) not in _ROWS_INDEX_LISTS:
        return None
    if len(node.inputs) != 2:
        return None
    x, rows = node.inputs
    return x, rows
