"""Graph rewrites that the C mode adds to PyTensor's ``fast_run``.

:func:`register` adds them to one compile mode (PyTensor's ``Mode.register``);
nothing is registered in PyTensor's global rewrite database. Four run late (after PyTensor's
canonicalisation and specialisation, before elementwise fusion):

- :func:`inline_softmax`: PyTensor 3's ``Softmax`` / ``LogSoftmax`` are
  ``OpFromGraph``s that the C backend runs through Python; inlined, their
  max-exp-sum graph becomes C loops.
  Running after the rewrites that recognise softmax patterns keeps them from
  folding it back.
- :func:`fuse_bernoulli_sample`: ``cast(u < sigmoid(a))``, the Bernoulli
  sample of ``parmesan_compat``, becomes one vectorised pass
  (:class:`untapped.fast.bernoulli.BernoulliSampleLogits`) instead of a scalar loop;
  a dense layer's bias in ``a`` is added in that pass (:func:`untapped.fast.bernoulli.split_bias`).
- :func:`fuse_bernoulli_sample_distance`: the row sums of ``sqr(s - x)`` for
  such a sample ``s`` that nothing else reads (eq. 7's distance, a logged
  term) become one pass that never writes the sample
  (:class:`untapped.fast.bernoulli.BernoulliSampleSquaredDistanceRows`).
- :func:`fuse_bernoulli_value_and_gradient`: a Bernoulli log-likelihood and
  its gradient on the same inputs run as one pass
  (:class:`untapped.fast.bernoulli.BernoulliLogLikRowsAndGrad`) when the gradient's row
  weights do not depend on the value (in the training step they are
  constants). Before fusion, because fusion can put the row weights and the
  terms in one multi-output loop, which would hide that independence.

Two run after elementwise fusion (positions 49.05 and 49.06), on what fusion left:

- :func:`parallel_matrix_sums`: a float32 matrix's row or column sum
  (float64 accumulator) runs on all threads (:class:`untapped.fast.rows.MatrixSum`).
- :func:`parallel_row_gathers`: a batch's rows picked from the data
  (``x[index]``, float32; PyTensor's op for it depends on its version,
  :mod:`untapped.fast.compat`) are copied on all threads
  (:class:`untapped.fast.rows.GatherRows`) instead of in PyTensor's one-thread loop.
  A negative row, which NumPy would count from the end, raises instead.

One runs between canonicalisation and specialisation (position 1.9):

- :func:`drop_self_evident_asserts`: the shape graph of a training step
  nests "could not broadcast" assertions that a batch's row count equals
  itself, ten deep. PyTensor removes one level per specialisation pass;
  this removes every level at once. Only assertions whose
  every condition is ``a == a`` (up to such assertions on ``a``) go.
"""

from pytensor.graph.basic import Constant
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.graph.traversal import ancestors
from pytensor.raise_op import Assert
from pytensor.scalar import basic as ps
from pytensor.tensor.basic import ScalarFromTensor
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.math import Sum
from pytensor.tensor.rewriting.ofg import inline_ofg_node
from pytensor.tensor.special import LogSoftmax, Softmax

from untapped.fast import compat
from untapped.fast.bernoulli import (
    BernoulliLogLikRows,
    BernoulliLogLikRowsAndGrad,
    BernoulliLogLikRowsGrad,
    BernoulliSampleLogits,
    bernoulli_sample_logits,
    bernoulli_sample_squared_distance_rows,
    split_bias,
)
from untapped.fast.patterns import sigmoid_input
from untapped.fast.rows import MatrixSum, gather_rows


@node_rewriter([Softmax, LogSoftmax])
def inline_softmax(fgraph, node):
    """Replace a ``Softmax`` / ``LogSoftmax`` node by its inner graph."""
    return inline_ofg_node(node)


def _elemwise_input(var, scalar_op_type):
    """The inputs of ``var``'s owner if it is an ``Elemwise`` of ``scalar_op_type``, else None."""
    owner = var.owner
    if owner is None or not isinstance(owner.op, Elemwise) or not isinstance(owner.op.scalar_op, scalar_op_type):
        return None
    return owner.inputs


@node_rewriter([Elemwise])
def fuse_bernoulli_sample(fgraph, node):
    """``cast(u < sigmoid(a), float32)`` on float32 matrices -> ``BernoulliSampleLogits(u, m, b)``, ``a = m + b``."""
    if not isinstance(node.op.scalar_op, ps.Cast) or node.outputs[0].type.dtype != "float32":
        return None
    (less,) = node.inputs
    compared = _elemwise_input(less, ps.LT)
    if compared is None:
        return None
    u, p = compared
    a = sigmoid_input(p)
    if a is None:
        return None
    if u.ndim != 2 or a.ndim != 2 or u.type.dtype != "float32" or a.type.dtype != "float32":
        return None
    if u.type.broadcastable != a.type.broadcastable:
        return None
    return [bernoulli_sample_logits(u, *split_bias(a))]


def _single_client(fgraph, var):
    """Whether exactly one node reads ``var`` (and it is no output of the graph)."""
    return len(fgraph.clients[var]) == 1 and var not in fgraph.outputs


@node_rewriter([Sum])
def fuse_bernoulli_sample_distance(fgraph, node):
    """``sum(sqr(s - x), axis=1)``, ``s = BernoulliSampleLogits(u, m, b)`` read by nothing else,
    -> ``BernoulliSampleSquaredDistanceRows(u, m, b, x)``."""
    (squared,) = node.inputs
    if node.op.axis != (1,) or node.op.acc_dtype != "float64" or node.outputs[0].type.dtype != "float32":
        return None
    difference = _elemwise_input(squared, ps.Sqr)
    if difference is None or not _single_client(fgraph, squared):
        return None
    (difference,) = difference
    operands = _elemwise_input(difference, ps.Sub)
    if operands is None or not _single_client(fgraph, difference):
        return None
    for s, x in (operands, operands[::-1]):
        # (x - s)^2 = (s - x)^2 exactly: negation is exact
        if s.owner is not None and isinstance(s.owner.op, BernoulliSampleLogits) and _single_client(fgraph, s):
            if x.type.dtype != "float32" or x.type.broadcastable != s.type.broadcastable:
                return None
            return [bernoulli_sample_squared_distance_rows(*s.owner.inputs, x)]
    return None


@node_rewriter([Sum])
def parallel_matrix_sums(fgraph, node):
    """``Sum{axis=0 or 1, acc=float64}`` of a float32 matrix -> ``MatrixSum(axis)``."""
    (x,) = node.inputs
    axis = node.op.axis
    if x.ndim != 2 or x.type.dtype != "float32" or node.outputs[0].type.dtype != "float32":
        return None
    if axis is None or len(axis) != 1 or node.op.acc_dtype != "float64":
        return None
    return [MatrixSum(axis[0])(x)]


@node_rewriter(list(compat.ROW_GATHER_OPS))
def parallel_row_gathers(fgraph, node):
    """The gather ``x[rows]`` of a float32 matrix by int64 rows -> ``GatherRows(x, rows)``."""
    operands = compat.row_gather_operands(node)
    if operands is None:
        return None
    x, rows = operands
    if x.ndim != 2 or x.type.dtype != "float32" or rows.ndim != 1 or rows.type.dtype != "int64":
        return None
    return [gather_rows(x, rows)]


@node_rewriter([BernoulliLogLikRowsGrad])
def fuse_bernoulli_value_and_gradient(fgraph, node):
    """``BernoulliLogLikRows(x, a, b)`` and ``BernoulliLogLikRowsGrad(x, a, g, b)`` -> one
    ``BernoulliLogLikRowsAndGrad(x, a, g, b)``, where the row weights ``g`` do not depend on the value."""
    x, a, g, b = node.inputs
    for client, _ in fgraph.clients[a]:
        if not isinstance(client.op, BernoulliLogLikRows) or client.op.eps != node.op.eps:
            continue
        if not all(mine is theirs for mine, theirs in zip(client.inputs, (x, a, b))):
            continue
        (value,) = client.outputs
        if any(v is value for v in ancestors([g])):
            return None
        fused = BernoulliLogLikRowsAndGrad(node.op.eps)(x, a, g, b)
        return dict(zip([value, *node.outputs], fused))
    return None


def _strip_asserts(var, only_self_evident=False):
    """``var`` without the assertions wrapped around it (only the self-evident ones, if asked)."""
    while var.owner is not None and isinstance(var.owner.op, Assert):
        if only_self_evident and not all(_self_evident(c) for c in var.owner.inputs[1:]):
            break
        var = var.owner.inputs[0]
    return var


def _self_evident(condition):
    """Whether ``condition`` is a constant true, or ``a == a`` up to assertions on ``a``."""
    if isinstance(condition, Constant):
        return bool(condition.data)
    owner = condition.owner
    if owner is not None and isinstance(owner.op, ScalarFromTensor):
        owner = owner.inputs[0].owner
    if owner is None or not isinstance(owner.op, Elemwise) or not isinstance(owner.op.scalar_op, ps.EQ):
        return False
    a, b = (_strip_asserts(v) for v in owner.inputs)
    return a is b


@node_rewriter([Assert])
def drop_self_evident_asserts(fgraph, node):
    """``Assert(x, c1, c2, ...)`` -> ``x`` when every ``c`` is self-evident (see :func:`_self_evident`),
    together with the self-evident assertions directly inside it; any other assertion stays."""
    stripped = _strip_asserts(node.outputs[0], only_self_evident=True)
    return None if stripped is node.outputs[0] else [stripped]


#: The C mode's rewrites by name, each with its position in PyTensor's rewrite sequence.
REWRITES = {
    "untapped_drop_self_evident_asserts": (dfs_rewriter(drop_self_evident_asserts), 1.9),
    "untapped_inline_softmax": (dfs_rewriter(inline_softmax), 47.5),
    "untapped_fuse_bernoulli_sample": (dfs_rewriter(fuse_bernoulli_sample), 47.6),
    "untapped_fuse_bernoulli_sample_distance": (dfs_rewriter(fuse_bernoulli_sample_distance), 47.65),
    "untapped_fuse_bernoulli_value_and_gradient": (dfs_rewriter(fuse_bernoulli_value_and_gradient), 47.7),
    "untapped_parallel_matrix_sums": (dfs_rewriter(parallel_matrix_sums), 49.05),
    "untapped_parallel_row_gathers": (dfs_rewriter(parallel_row_gathers), 49.06),
}


def register(mode, skip=()):
    """A copy of the compile mode ``mode`` that also runs :data:`REWRITES`, but those named in ``skip``."""
    unknown = set(skip) - set(REWRITES)
    if unknown:
        raise ValueError(f"no rewrite named {', '.join(sorted(unknown))}")
    return mode.register(*(rewrite for name, rewrite in REWRITES.items() if name not in skip))
