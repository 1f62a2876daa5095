"""The graph rewrites the C mode adds (``untapped.fast.rewrites``)."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.raise_op import Assert

from untapped.backend import compile_mode
from untapped.fast import rewrites


def _asserts(f):
    return [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Assert)]


def test_self_evident_assert_chains_are_dropped():
    """Assert(n, n == n), nested as PyTensor's shape graph nests them, goes in one step (PyTensor's
    own rewrites need one pass per level) and compiles to nothing."""
    from pytensor.graph.fg import FunctionGraph

    x = pt.vector("x")
    n = x.shape[0]
    inner = Assert("rows")(n, pt.eq(n, n))
    outer = Assert("rows")(inner, pt.eq(inner, n))
    fgraph = FunctionGraph([x], [outer], clone=False)
    assert rewrites.drop_self_evident_asserts.transform(fgraph, outer.owner) == [n]
    f = pytensor.function([x], outer * 2, mode=compile_mode("c"))
    assert not _asserts(f)
    assert f(np.zeros(3)) == 6


def test_real_assertions_are_kept():
    x, y = pt.vector("x"), pt.vector("y")
    checked = Assert("same length")(x.shape[0], pt.eq(x.shape[0], y.shape[0]))
    f = pytensor.function([x, y], checked, mode=compile_mode("c"))
    assert _asserts(f)
    assert f(np.zeros(3), np.zeros(3)) == 3
    with pytest.raises(AssertionError, match="same length"):
        f(np.zeros(3), np.zeros(4))


def test_a_real_assertion_inside_a_self_evident_one_is_kept():
    x, y = pt.vector("x"), pt.vector("y")
    n = x.shape[0]
    real = Assert("same length")(n, pt.eq(n, y.shape[0]))
    outer = Assert("rows")(real, pt.eq(real, n))
    f = pytensor.function([x, y], outer, mode=compile_mode("c"))
    assert [a.op.msg for a in _asserts(f)] == ["same length"]
    with pytest.raises(AssertionError, match="same length"):
        f(np.zeros(3), np.zeros(4))


def test_training_step_has_no_broadcast_assert_chains():
    """Our ops infer their shapes, so no row-count assertion survives into the training step."""
    from untapped.model import SSDGM

    est = SSDGM.from_preset(
        "untapped", batch_size=4, decoder_hidden=(5, 6), classifier_hidden=(3, 3), encoder_hidden=(3, 3)
    )
    f = est.graph.function("train")
    rows = [n for n in _asserts(f) if any("index" in str(v) for v in pytensor.graph.traversal.ancestors(n.inputs))]
    assert not rows


@pytest.mark.parametrize("axis", [0, 1])
def test_matrix_sums_run_on_all_threads_and_match_float64_sums(axis):
    from untapped.backend import float32
    from untapped.fast import rows as fast_rows

    rng = np.random.default_rng(2)
    x = (rng.standard_normal((1003, 37)) * 100).astype(np.float32)
    with float32():
        xs = pt.matrix("x")
        total = pt.sqr(xs).sum(axis=axis)
        f = pytensor.function([xs], [total, pytensor.grad(total.sum(), xs)], mode=compile_mode("c"))
    assert [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, fast_rows.MatrixSum)]
    expected = np.square(x.astype(np.float64)).sum(axis=axis).astype(np.float32)
    for layout in (x, np.asfortranarray(x)):
        out, grad = f(layout)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-6)
        np.testing.assert_allclose(grad, 2 * x, rtol=1e-6)


def test_row_gathers_from_float32_data_run_on_all_threads():
    """``data[rows]`` of a float32 matrix becomes GatherRows: NumPy's take, bit for bit; other gathers stay."""
    from untapped.backend import float32
    from untapped.fast import rows as fast_rows

    rng = np.random.default_rng(4)
    data = rng.standard_normal((500, 37)).astype(np.float32)
    rows = rng.integers(0, 500, 300)
    with float32():
        shared = pytensor.shared(data)
        index = pt.vector("index", dtype="int64")
        f = pytensor.function([index], [shared[index], shared[index, 0]], mode=compile_mode("c"))
        f64 = pytensor.function([index], pytensor.shared(data.astype(np.float64))[index], mode=compile_mode("c"))
    gathers = [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, fast_rows.GatherRows)]
    assert len(gathers) == 1
    assert not [n for n in f64.maker.fgraph.apply_nodes if isinstance(n.op, fast_rows.GatherRows)]
    picked, column = f(rows)
    assert np.array_equal(picked, data[rows]) and np.array_equal(column, data[rows, 0])
    assert np.array_equal(f64(rows), data.astype(np.float64)[rows])
    with pytest.raises(IndexError):
        f(np.array([0, 500]))
