"""Custom elementwise ops (``untapped.ops``): values and gradients against NumPy and finite differences."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from untapped import ops
from untapped.backend import compile_mode, float32


def _grid():
    """Every regime of the float32 tanh: tiny, the polynomial range, its edge, the exp range, saturation, signs."""
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            [0.0, -0.0, 1e-30, -1e-30, 1e-7, 0.624999, 0.625, 0.625001, -0.625, 9.0, 10.0, 44.0, 89.0, 1e30, -1e30],
            rng.uniform(-0.7, 0.7, 20000),
            rng.uniform(-12, 12, 20000),
            rng.standard_normal(20000) * 1e-3,
        ]
    )
    return values.astype(np.float32)


@pytest.mark.parametrize("mode", ["c", "py"])
def test_fast_tanh_values(mode):
    with float32():
        x = pt.vector("x")
        kwargs = dict(mode=compile_mode("c")) if mode == "c" else dict(mode="FAST_COMPILE")
        f = pytensor.function([x], ops.tanh(x), **kwargs)
    v = _grid()
    out = f(v)
    assert out.dtype == np.float32
    exact = np.tanh(v.astype(np.float64))
    rel = np.abs(out - exact) / np.maximum(np.abs(exact), np.finfo(np.float32).tiny)
    assert rel.max() < 5e-7, rel.max()
    # no worse than float32 rounding of the exact value, by more than a few ulps
    assert np.abs(out - exact).max() <= 4 * np.spacing(np.float32(1.0))
    assert np.array_equal(np.signbit(out[:2]), [False, True])
    assert np.isnan(f(np.array([np.nan], np.float32)))[0]
    assert np.array_equal(f(np.array([np.inf, -np.inf], np.float32)), [1.0, -1.0])


def test_fast_tanh_fuses_and_has_tanh_gradient():
    with float32():
        x, b, g = pt.matrix("x"), pt.vector("b"), pt.matrix("g")
        h = ops.tanh(x + b)
        gx = pytensor.grad((h * g).sum(), x)
        f = pytensor.function([x, b, g], [h, gx], mode=compile_mode("c"))
    rng = np.random.default_rng(1)
    xv = (rng.standard_normal((30, 7)) * 2).astype(np.float32)
    bv = rng.standard_normal(7).astype(np.float32)
    gv = rng.standard_normal((30, 7)).astype(np.float32)
    h_out, gx_out = f(xv, bv, gv)
    t = np.tanh(xv.astype(np.float64) + bv)
    np.testing.assert_allclose(h_out, t, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gx_out, gv * (1 - t**2), rtol=1e-5, atol=1e-6)
    # central differences of sum(g * tanh(x + b)) in float64
    eps = 1e-4
    a = xv.astype(np.float64) + bv
    fd = gv * (np.tanh(a + eps) - np.tanh(a - eps)) / (2 * eps)
    np.testing.assert_allclose(gx_out, fd, rtol=1e-4, atol=1e-6)
    assert all(v.type.dtype != "float64" for v in f.maker.fgraph.variables if hasattr(v.type, "dtype"))


def test_fast_tanh_float64_graph_is_numpy_tanh():
    x = pt.dvector("x")
    f = pytensor.function([x], ops.tanh(x), mode=compile_mode("c"))
    v = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(f(v), np.tanh(v), rtol=1e-15)
