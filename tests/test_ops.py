"""The C kernels of the speed layer (``untapped.fast``): values and gradients against NumPy and finite differences."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.compile.mode import Mode

from untapped.backend import compile_mode, float32
from untapped.fast import bernoulli as fast_bernoulli
from untapped.fast import matmul as fast_matmul
from untapped.fast import noise as fast_noise
from untapped.fast import rewrites
from untapped.fast import rows as fast_rows
from untapped.fast import tanh as fast_tanh


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
        f = pytensor.function([x], fast_tanh.tanh(x), **kwargs)
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
        h = fast_tanh.tanh(x + b)
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
    f = pytensor.function([x], fast_tanh.tanh(x), mode=compile_mode("c"))
    v = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(f(v), np.tanh(v), rtol=1e-15)


# ---------------------------------------------------------------------------
# Fused Bernoulli log-likelihood, float32 uniforms, oriented matmul


def _bernoulli_reference(x, a, eps=1e-5, dtype=np.float32):
    """float64 sums of the terms, from a sigmoid rounded to ``dtype`` (float32, as the graph's)."""
    a = np.asarray(a, dtype)
    p = (1.0 / (1.0 + np.exp(-a))).astype(np.float64)
    c = np.clip(p, np.float32(eps), np.float32(1 - eps))
    return np.sum(x * np.log(c) + (1 - x) * np.log(1 - c), axis=-1)


@pytest.mark.parametrize("mode", ["c", "py"])
def test_bernoulli_log_lik_rows_values_and_gradient(mode):
    from parmesan_compat.distributions import log_bernoulli

    rng = np.random.default_rng(3)
    a = (rng.standard_normal((37, 23)) * 4).astype(np.float32)
    a[0, :3] = [-30.0, 30.0, 0.0]  # both clips and the middle
    x = (rng.random((37, 23)) < 0.4).astype(np.float32)
    x[1] = 0.3  # non-binary x is handled too
    gw = rng.standard_normal(37).astype(np.float32)
    with float32():
        xs, as_ = pt.matrix("x"), pt.matrix("a")
        fused = fast_bernoulli.bernoulli_log_lik_rows(xs, pt.sigmoid(as_))
        assert isinstance(fused.owner.op, fast_bernoulli.BernoulliLogLikRows)
        plain = pt.sum(log_bernoulli(xs, pt.sigmoid(as_)), axis=-1)
        outs = []
        for expr in (fused, plain):
            cost = pt.sum(expr * gw)
            outs += [expr, *pytensor.grad(cost, [as_, xs])]
        kwargs = dict(mode=compile_mode("c")) if mode == "c" else dict(mode="FAST_COMPILE")
        f = pytensor.function([xs, as_], outs, **kwargs)
    v_f, ga_f, gx_f, v_p, ga_p, gx_p = f(x, a)
    np.testing.assert_allclose(v_f, _bernoulli_reference(x, a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_f, v_p, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ga_f, ga_p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gx_f, gx_p, rtol=1e-5, atol=1e-6)
    assert ga_f[0, 0] == 0.0 and ga_f[0, 1] == 0.0  # clipped: no gradient, as Theano's clip
    # central differences in float64 where the clip is not active
    eps = 1e-3
    inside = np.abs(a) < 10
    # row sums: perturb one column at a time
    fd = np.zeros_like(a, dtype=np.float64)
    for j in range(a.shape[1]):
        d = np.zeros_like(a, dtype=np.float64)
        d[:, j] = eps
        up, down = _bernoulli_reference(x, a + d, dtype=np.float64), _bernoulli_reference(x, a - d, dtype=np.float64)
        fd[:, j] = gw * (up - down) / (2 * eps)
    np.testing.assert_allclose(ga_f[inside], fd[inside], rtol=1e-3, atol=1e-4)


def test_bernoulli_vectorised_loops_match_plain_graph_at_mnist_width():
    """The vectorised (OpenMP, libmvec) loops at the decoder's width agree with PyTensor's own
    float32 graph to float32 rounding, for logits in every regime, and C- or Fortran-ordered input."""
    from parmesan_compat.distributions import log_bernoulli

    rng = np.random.default_rng(11)
    a = rng.uniform(-15, 15, (64, 784)).astype(np.float32)
    a[0, :6] = [-100.0, 100.0, -89.0, 89.0, -1e30, 1e30]  # exp overflows
    x = (rng.random((64, 784)) < 0.13).astype(np.float32)
    gw = rng.standard_normal(64).astype(np.float32)
    with float32():
        xs, as_ = pt.matrix("x"), pt.matrix("a")
        fused = fast_bernoulli.bernoulli_log_lik_rows(xs, pt.sigmoid(as_))
        plain = pt.sum(log_bernoulli(xs, pt.sigmoid(as_)), axis=-1)
        outs = [fused, plain, *pytensor.grad(pt.sum(fused * gw), [as_]), *pytensor.grad(pt.sum(plain * gw), [as_])]
        f = pytensor.function([xs, as_], outs, mode=compile_mode("c"))
    for xv, av in ((x, a), (np.asfortranarray(x), np.asfortranarray(a))):
        v_f, v_p, ga_f, ga_p = f(xv, av)
        np.testing.assert_allclose(v_f, v_p, rtol=2e-6)
        np.testing.assert_allclose(ga_f, ga_p, rtol=1e-5, atol=1e-6)


def _dense_bernoulli_inputs(seed, rows, cols):
    """A decoder's output pre-activation m and bias b, data x (binary rows and one that is not), row weights g."""
    rng = np.random.default_rng(seed)
    m = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    b = rng.standard_normal(cols).astype(np.float32)
    x = (rng.random((rows, cols)) < 0.3).astype(np.float32)
    x[2, 5] = 0.25
    g = rng.standard_normal(rows).astype(np.float32)
    return m, b, x, g


@pytest.mark.parametrize("mode", ["c", "py"])
def test_bernoulli_log_lik_rows_takes_a_dense_layers_bias_into_its_pass(mode):
    """For ``sigmoid(m + b)`` the op reads m and the bias b (no (rows, d) sum is formed); its values and the
    gradients of m and b (the column sums, formed in the same pass) match the plain graph, float64 sums
    and central differences. Non-binary rows and binary rows (one log an element) both."""
    from parmesan_compat.distributions import log_bernoulli

    m, b, x, gw = _dense_bernoulli_inputs(13, 41, 29)
    with float32():
        xs, ms, bs = pt.matrix("x"), pt.matrix("m"), pt.vector("b")
        fused = fast_bernoulli.bernoulli_log_lik_rows(xs, pt.sigmoid(ms + bs.dimshuffle("x", 0)))
        assert isinstance(fused.owner.op, fast_bernoulli.BernoulliLogLikRows)
        assert fused.owner.inputs[1] is ms and fused.owner.inputs[2] is bs
        plain = pt.sum(log_bernoulli(xs, pt.sigmoid(ms + bs.dimshuffle("x", 0))), axis=-1)
        outs = []
        for expr in (fused, plain):
            outs += [expr, *pytensor.grad(pt.sum(expr * gw), [ms, bs])]
        f = pytensor.function([xs, ms, bs], outs, mode=compile_mode("c") if mode == "c" else "FAST_COMPILE")
    v_f, gm_f, gb_f, v_p, gm_p, gb_p = f(x, m, b)
    a = m + b  # float32, as the graph adds
    np.testing.assert_allclose(v_f, _bernoulli_reference(x, a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_f, v_p, rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(gm_f, gm_p, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gb_f, gm_f.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gb_f, gb_p, rtol=1e-5, atol=1e-6)
    eps = 1e-3
    total = lambda bias: float(gw @ _bernoulli_reference(x, m.astype(np.float64) + bias, dtype=np.float64))  # noqa: E731
    fd = [(total(b + eps * e) - total(b - eps * e)) / (2 * eps) for e in np.eye(29)]
    np.testing.assert_allclose(gb_f, fd, rtol=1e-3, atol=1e-3)


def test_a_dense_layers_bias_is_split_off_only_where_it_is_a_row_broadcast_vector():
    def split(a):
        m, b = fast_bernoulli.split_bias(a)
        return m, b

    with float32():
        m, b, c = pt.matrix("m"), pt.vector("b"), pt.matrix("c")
        for a in (m + b.dimshuffle("x", 0), b.dimshuffle("x", 0) + m):
            got_m, got_b = split(a)
            assert got_m is m and got_b is b
        for not_a_bias in (m + c, m * b.dimshuffle("x", 0), m + b.dimshuffle(0, "x"), m, pt.sigmoid(m)):
            got_m, got_b = split(not_a_bias)
            assert got_m is not_a_bias and got_b is None
        column = pt.matrix("column", shape=(None, 1))
        widened = column + b.dimshuffle("x", 0)  # (n, 1) broadcast to (n, d): the sum is wider than the matrix
        got_m, got_b = split(widened)
        assert got_m is widened and got_b is None


def test_the_bernoulli_ops_refuse_a_bias_of_the_wrong_length():
    with float32():
        xs, as_, bs, gs = pt.matrix("x"), pt.matrix("a"), pt.vector("b"), pt.vector("g")
        outputs = [
            fast_bernoulli.BernoulliLogLikRows()(xs, as_, bs),
            *fast_bernoulli.BernoulliLogLikRowsGrad()(xs, as_, gs, bs),
        ]
        f = pytensor.function([xs, as_, bs, gs], outputs, mode=compile_mode("c"))
    x = np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="one entry a column"):
        f(x, x, np.zeros(4, np.float32), np.ones(3, np.float32))


def test_a_bernoulli_value_and_its_gradient_on_the_same_inputs_run_as_one_pass():
    """Where the row weights do not depend on the value, the value and gradient ops become one
    ``BernoulliLogLikRowsAndGrad`` with the same outputs (to float32 rounding), for binary and other rows, in
    any layout."""
    m, b, x, g = _dense_bernoulli_inputs(14, 53, 31)
    with float32():
        xs, ms, bs, gs = pt.matrix("x"), pt.matrix("m"), pt.vector("b"), pt.vector("g")
        outputs = [
            fast_bernoulli.BernoulliLogLikRows()(xs, ms, bs), *fast_bernoulli.BernoulliLogLikRowsGrad()(xs, ms, gs, bs)
        ]
        fused = pytensor.function([xs, ms, bs, gs], outputs, mode=compile_mode("c"))
        separate = pytensor.function(
            [xs, ms, bs, gs],
            outputs,
            mode=rewrites.register(
                Mode(linker="cvm", optimizer="fast_run"), skip=("untapped_fuse_bernoulli_value_and_gradient",)
            ),
        )
        direct = pytensor.function(
            [xs, ms, bs, gs], fast_bernoulli.BernoulliLogLikRowsAndGrad()(xs, ms, gs, bs), mode="FAST_COMPILE"
        )
    assert [type(n.op) for n in fused.maker.fgraph.apply_nodes] == [fast_bernoulli.BernoulliLogLikRowsAndGrad]
    assert {type(n.op) for n in separate.maker.fgraph.apply_nodes} == {
        fast_bernoulli.BernoulliLogLikRows, fast_bernoulli.BernoulliLogLikRowsGrad
    }
    expected = separate(x, m, b, g)
    for x_in, m_in in ((x, m), (np.asfortranarray(x), m), (x, np.asfortranarray(m))):
        value, g_a, g_b = fused(x_in, m_in, b, g)
        assert all(out.dtype == np.float32 for out in (value, g_a, g_b))
        # the same float32 arithmetic, up to the vector and scalar expf / logf of a row's SIMD
        # tail (the fused op's gradient reuses the mean its value's loop computed): the mean mu
        # differs by a few of its ulps, so d/da = g (x - mu) by a few |g| eps, however much
        # x - mu cancels (where mu is near x, that is many ulps of the gradient itself)
        np.testing.assert_allclose(value, expected[0], rtol=2e-6)
        mean_error = np.abs(g_a.astype(np.float64) - expected[1]) / (np.abs(g)[:, None] * np.finfo(np.float32).eps)
        assert mean_error.max() <= 4, mean_error.max()
        np.testing.assert_allclose(g_b, expected[2], rtol=1e-6, atol=1e-6 * np.abs(g_a).sum(0).max())
    for got, want in zip(direct(x, m, b, g), expected):  # the NumPy implementation
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_bernoulli_value_and_gradient_stay_apart_where_the_weights_depend_on_the_value():
    rng = np.random.default_rng(15)
    x = (rng.random((9, 6)) < 0.5).astype(np.float32)
    a = rng.standard_normal((9, 6)).astype(np.float32)
    with float32():
        xs, as_ = pt.matrix("x"), pt.matrix("a")
        value = fast_bernoulli.BernoulliLogLikRows()(xs, as_)
        g_a, _ = fast_bernoulli.BernoulliLogLikRowsGrad()(xs, as_, 2 * value)
        f = pytensor.function([xs, as_], [value, g_a], mode=compile_mode("c"))
    assert {type(n.op) for n in f.maker.fgraph.apply_nodes} >= {
        fast_bernoulli.BernoulliLogLikRows, fast_bernoulli.BernoulliLogLikRowsGrad
    }
    got_value, got_grad = f(x, a)
    np.testing.assert_allclose(got_value, _bernoulli_reference(x, a), rtol=1e-5, atol=1e-5)
    p = 1 / (1 + np.exp(-a.astype(np.float64)))
    np.testing.assert_allclose(got_grad, 2 * got_value[:, None] * (x - p), rtol=1e-4, atol=1e-5)


def test_bernoulli_ops_propagate_nan():
    """A NaN in x, a or the row weight makes its row (value) or element (gradient) NaN (the divergence check
    relies on it)."""
    x = np.zeros((3, 40), np.float32)
    a = np.zeros((3, 40), np.float32)
    g = np.ones(3, np.float32)
    x[0, 17], a[1, 33], g[2] = np.nan, np.nan, np.nan
    with float32():
        xs, as_, gs = pt.matrix("x"), pt.matrix("a"), pt.vector("g")
        f = pytensor.function(
            [xs, as_, gs],
            [fast_bernoulli.BernoulliLogLikRows()(xs, as_), fast_bernoulli.BernoulliLogLikRowsGrad()(xs, as_, gs)[0]],
            mode=compile_mode("c"),
        )
    value, grad = f(x, a, g)
    assert np.array_equal(np.isnan(value), [True, True, False])
    expected = np.zeros((3, 40), bool)
    expected[0, 17] = expected[1, 33] = True
    expected[2] = True
    assert np.array_equal(np.isnan(grad), expected)


def test_bernoulli_fused_op_only_for_float32_sigmoid():
    with float32():
        x, a = pt.matrix("x"), pt.matrix("a")
        assert fast_bernoulli.bernoulli_log_lik_rows(x, a) is None
        assert fast_bernoulli.bernoulli_log_lik_rows(x, pt.tanh(a)) is None
    assert fast_bernoulli.bernoulli_log_lik_rows(pt.dmatrix(), pt.sigmoid(pt.dmatrix())) is None


def test_uniform_float32_is_seeded_and_below_one():
    from pytensor.tensor.random import shared_rng

    with float32():
        rng = shared_rng(np.random.default_rng(5))
        next_rng, draw = fast_noise.uniform_float32(rng, (1000, 7))
        f = pytensor.function([], draw, updates={rng: next_rng}, mode=compile_mode("c"))
    first, second = f(), f()
    assert first.dtype == np.float32 and first.shape == (1000, 7)
    assert not np.array_equal(first, second)
    expected = np.random.default_rng(5)
    assert np.array_equal(first, expected.random((1000, 7), dtype=np.float32))
    assert np.array_equal(second, expected.random((1000, 7), dtype=np.float32))
    assert first.min() >= 0.0 and max(first.max(), second.max()) < 1.0


def _state(generator):
    return generator.bit_generator.state


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_large_uniform_draws_split_across_threads_give_numpys_stream_and_state(monkeypatch, threads):
    """``random_float32`` equals ``Generator.random(dtype=float32)``: the same numbers, the same final state
    (so the next draw is the same too), whether split across threads or not."""
    monkeypatch.setattr(fast_noise.os, "cpu_count", lambda: threads)
    submitted = []
    pool = fast_noise._draw_pool()

    class CountingPool:
        def submit(self, *args, **kwargs):
            submitted.append(args)
            return pool.submit(*args, **kwargs)

    monkeypatch.setattr(fast_noise, "_draw_pool", lambda: CountingPool())
    cases = [
        (np.random.PCG64, (1100, 1000), True),
        (np.random.PCG64DXSM, (1 << 20) + 2, True),
        (np.random.PCG64, (1025, 1025), False),  # odd: one thread
        (np.random.PCG64, (7, 3), False),  # small: one thread
        (np.random.Philox, (1100, 1000), False),  # cannot jump by steps: one thread
    ]
    for bit_generator, size, split in cases:
        ours, numpys = np.random.Generator(bit_generator(17)), np.random.Generator(bit_generator(17))
        for _ in range(2):
            del submitted[:]
            got = fast_noise.random_float32(ours, size)
            expected = numpys.random(size, dtype=np.float32)
            assert got.dtype == np.float32 and got.shape == expected.shape
            assert np.array_equal(got, expected), (bit_generator, size)
            assert len(submitted) == (threads - 1 if split else 0), (bit_generator, size)
        assert np.array_equal(ours.random(9, dtype=np.float32), numpys.random(9, dtype=np.float32))
        if bit_generator is not np.random.Philox:
            assert _state(ours) == _state(numpys)
    # a draw that starts from half a step (after an odd draw) stays on one thread, and in step
    ours, numpys = np.random.Generator(np.random.PCG64(3)), np.random.Generator(np.random.PCG64(3))
    assert np.array_equal(fast_noise.random_float32(ours, 3), numpys.random(3, dtype=np.float32))
    del submitted[:]
    assert np.array_equal(fast_noise.random_float32(ours, (1100, 1000)), numpys.random((1100, 1000), dtype=np.float32))
    assert not submitted and _state(ours) == _state(numpys)


def _draw_in_child(seed):
    return fast_noise.random_float32(np.random.Generator(np.random.PCG64(seed)), (1100, 1000))


def test_large_uniform_draws_work_in_a_forked_child():
    """A child forked after the draw threads started gets threads of its own (it would otherwise wait forever)."""
    import multiprocessing

    fast_noise.random_float32(np.random.Generator(np.random.PCG64(1)), (1100, 1000))  # the parent's pool is running
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_draw_in_child, (4,)).get(timeout=60)
    assert np.array_equal(got, np.random.Generator(np.random.PCG64(4)).random((1100, 1000), dtype=np.float32))


@pytest.mark.parametrize("shape", [(30, 200, 5), (5, 200, 30), (7, 3, 7)])
def test_matmul_values_and_gradient(shape):
    m, k, n = shape
    rng = np.random.default_rng(4)
    xv = rng.standard_normal((m, k)).astype(np.float32)
    yv = rng.standard_normal((k, n)).astype(np.float32)
    gv = rng.standard_normal((m, n)).astype(np.float32)
    with float32():
        x, y = pt.matrix("x"), pt.matrix("y")
        z = fast_matmul.matmul(x, y)
        gx, gy = pytensor.grad(pt.sum(z * gv), [x, y])
        f = pytensor.function([x, y], [z, gx, gy, z.shape], mode=compile_mode("c"))
    z_out, gx_out, gy_out, shp = f(xv, yv)
    x64, y64, g64 = xv.astype(np.float64), yv.astype(np.float64), gv.astype(np.float64)
    np.testing.assert_allclose(z_out, x64 @ y64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gx_out, g64 @ y64.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gy_out, x64.T @ g64, rtol=1e-5, atol=1e-4)
    assert tuple(shp) == (m, n) and z_out.dtype == np.float32


def test_bias_tanh_values_gradient_and_layouts():
    """``bias_tanh(a, b)`` is tanh(a + b) to a few float32 ulps, in every regime and memory layout;
    its gradients match the closed form and float64 central differences; NaN stays NaN."""
    rng = np.random.default_rng(5)
    a = np.concatenate([_grid()[:15], rng.uniform(-12, 12, 64 * 37 - 15)]).astype(np.float32).reshape(64, 37)
    b = rng.standard_normal(37).astype(np.float32)
    g = rng.standard_normal((64, 37)).astype(np.float32)
    with float32():
        av, bv, gv = pt.matrix("a"), pt.vector("b"), pt.matrix("g")
        t = fast_tanh.bias_tanh(av, bv)
        grads = pytensor.grad((t * gv).sum(), [av, bv])
        f = pytensor.function([av, bv, gv], [t, *grads], mode=compile_mode("c"))
    exact = np.tanh(a.astype(np.float64) + b.astype(np.float32))
    for a_in in (a, np.asfortranarray(a), a[:, ::-1][:, ::-1]):
        out, ga, gb = f(a_in, b, g)
        assert out.dtype == np.float32
        assert np.abs(out - exact).max() <= 4 * np.spacing(np.float32(1.0))
    np.testing.assert_allclose(ga, g * (1 - exact**2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb, (g * (1 - exact**2)).sum(0), rtol=1e-4, atol=1e-5)
    eps = 1e-4
    z = a.astype(np.float64) + b
    fd = g * (np.tanh(z + eps) - np.tanh(z - eps)) / (2 * eps)
    np.testing.assert_allclose(ga, fd, rtol=1e-3, atol=1e-5)
    special = np.array([[np.nan, np.inf, -np.inf, 0.0]], np.float32)
    out = f(special, np.zeros(4, np.float32), np.ones((1, 4), np.float32))[0]
    assert np.isnan(out[0, 0]) and list(out[0, 1:]) == [1.0, -1.0, 0.0]


def test_tanh_grad_matches_the_plain_graph_in_every_layout():
    """``tanh_grad(g, t)`` = g (1 - t^2): PyTensor's own float32 graph of it, to an ulp, for every memory layout;
    its second output, the column sums, is MatrixSum's of the first, bit for bit, and float64's to rounding."""
    rng = np.random.default_rng(6)
    t = np.tanh(rng.uniform(-4, 4, (70, 41))).astype(np.float32)
    t[0, :4] = [1.0, -1.0, 0.0, np.nan]
    g = rng.standard_normal((70, 41)).astype(np.float32)
    with float32():
        gv, tv, mv = pt.matrix("g"), pt.matrix("t"), pt.matrix("m")
        ours = pytensor.function([gv, tv], fast_tanh.tanh_grad(gv, tv), mode=compile_mode("c"))
        plain = pytensor.function([gv, tv], gv * (1 - pt.sqr(tv)), mode=compile_mode("c"))
        column_sums = pytensor.function([mv], fast_rows.MatrixSum(0)(mv), mode=compile_mode("c"))
    expected = plain(g, t)
    np.testing.assert_allclose(expected[1:], g[1:] * (1 - t[1:].astype(np.float64) ** 2), rtol=1e-5, atol=1e-6)
    for g_in in (g, np.asfortranarray(g)):
        for t_in in (t, np.asfortranarray(t), t[::-1][::-1], np.ascontiguousarray(t.T).T):
            got, sums = ours(g_in, t_in)
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_max_ulp(got[1:], expected[1:], maxulp=1)
            assert list(got[0, :3]) == [0.0, 0.0, g[0, 2]] and np.isnan(got[0, 3])
            assert sums.dtype == np.float32 and np.array_equal(sums, column_sums(got), equal_nan=True)
            np.testing.assert_allclose(sums[4:], got[:, 4:].astype(np.float64).sum(0), rtol=1e-6, atol=1e-6)
            assert np.isnan(sums[3])
    got, sums = ours(g[:0], t[:0])
    assert got.shape == (0, 41) and np.array_equal(sums, np.zeros(41, np.float32))
    with pytest.raises(ValueError, match="one shape"):
        ours(g, t[:, :40])


def test_the_tanh_layer_gradient_runs_on_tanh_grad():
    with float32():
        a, b, g = pt.matrix("a"), pt.vector("b"), pt.matrix("g")
        grads = pytensor.grad((fast_tanh.bias_tanh(a, b) * g).sum(), [a, b])
        f = pytensor.function([a, b, g], grads, mode=compile_mode("c"))
    assert any(isinstance(n.op, fast_tanh.TanhGrad) for n in f.maker.fgraph.apply_nodes)


@pytest.mark.parametrize("mode", ["c", "py"])
def test_gather_rows_and_its_gradient_are_numpys_take_and_add_at(mode):
    """``gather_rows(a, rows)`` is ``a[rows]`` and its gradient is ``np.add.at``'s scatter, bit for bit,
    in every memory layout (the scatter adds in NumPy's order); a row out of range raises."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 37)).astype(np.float32)
    rows = rng.integers(0, 6, 50)
    g = rng.standard_normal((50, 37)).astype(np.float32)
    with float32():
        av, rv, gv = pt.matrix("a"), pt.vector("rows", dtype="int64"), pt.matrix("g")
        out = fast_rows.gather_rows(av, rv)
        grad = pytensor.grad((out * gv).sum(), av)
        f = pytensor.function([av, rv, gv], [out, grad], mode=compile_mode("c") if mode == "c" else "FAST_COMPILE")
    scattered = np.zeros_like(a)
    np.add.at(scattered, rows, g)
    for a_in in (a, np.asfortranarray(a)):
        for rows_in in (rows, np.repeat(rows, 2)[::2]):
            for g_in in (g, np.asfortranarray(g)):
                got, got_grad = f(a_in, rows_in, g_in)
                assert np.array_equal(got, a[rows]) and got.flags.c_contiguous
                assert np.array_equal(got_grad, scattered)
    got, got_grad = f(a, rows[:0], g[:0])
    assert got.shape == (0, 37) and np.array_equal(got_grad, np.zeros_like(a))
    for bad in ([0, 6], [-1, 0]):
        with pytest.raises(IndexError):
            f(a, np.array(bad), g[:2])


def test_dense_tanh_layers_use_bias_tanh():
    from untapped.fast.kernels import FAST
    from untapped.paper.networks import Networks

    with float32():
        nets = Networks(seed=1, kernels=FAST)
        x = pt.matrix("x")
        logits = nets.classifier(x).logits
    hidden = [
        v
        for v in pytensor.graph.traversal.ancestors([logits])
        if v.owner and isinstance(v.owner.op, fast_tanh.BiasTanh)
    ]
    assert len(hidden) == 2


def test_bernoulli_sample_is_fused_and_draws_the_same():
    """Our modes turn cast(u < sigmoid(a)) into one op that draws what NumPy's float32 formula draws."""
    from parmesan_compat.layers.sample import bernoulli_sample

    rng = np.random.default_rng(9)
    a = rng.uniform(-12, 12, (200, 784)).astype(np.float32)
    a[0, :6] = [-100.0, 100.0, -89.0, 89.0, -1e30, 1e30]  # exp overflows
    u = rng.random((200, 784), dtype=np.float32)
    with float32():
        us, as_ = pt.matrix("u"), pt.matrix("a")
        sample = bernoulli_sample(pt.sigmoid(as_), us)
        f = pytensor.function([us, as_], [sample, pytensor.grad(sample.sum(), as_)], mode=compile_mode("c"))
    assert [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, fast_bernoulli.BernoulliSampleLogits)]
    out, grad = f(u, a)
    with np.errstate(over="ignore"):
        p = (np.float32(1) / (np.float32(1) + np.exp(-a))).astype(np.float32)
    expected = (u < p).astype(np.float32)
    differ = out != expected
    # only where u and p are within float32 rounding of each other
    assert np.all(np.abs(u[differ] - p[differ]) <= 2 * np.spacing(p[differ]))
    assert differ.sum() <= 2
    assert not grad.any()  # a comparison has no gradient, as in the original
    for u_in, a_in in ((np.asfortranarray(u), a), (u, np.asfortranarray(a))):
        assert np.array_equal(f(u_in, a_in)[0], out)


def test_the_fused_bernoulli_sample_adds_a_dense_layers_bias_in_its_pass():
    from parmesan_compat.layers.sample import bernoulli_sample

    rng = np.random.default_rng(10)
    m = rng.uniform(-8, 8, (120, 784)).astype(np.float32)
    b = rng.uniform(-4, 4, 784).astype(np.float32)
    u = rng.random((120, 784), dtype=np.float32)
    with float32():
        us, ms, bs = pt.matrix("u"), pt.matrix("m"), pt.vector("b")
        f = pytensor.function(
            [us, ms, bs], bernoulli_sample(pt.sigmoid(ms + bs.dimshuffle("x", 0)), us), mode=compile_mode("c")
        )
    (node,) = [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, fast_bernoulli.BernoulliSampleLogits)]
    assert node.inputs[1].name == "m" and node.inputs[2].name == "b"
    assert len(f.maker.fgraph.apply_nodes) == 1
    with np.errstate(over="ignore"):
        p = (np.float32(1) / (np.float32(1) + np.exp(-(m + b)))).astype(np.float32)
    out = f(u, m, b)
    differ = out != (u < p)
    assert np.all(np.abs(u[differ] - p[differ]) <= 2 * np.spacing(p[differ])) and differ.sum() <= 2
    assert np.array_equal(f(u, np.asfortranarray(m), b), out)


def test_a_samples_squared_distance_to_the_data_is_one_pass_and_the_same_sums():
    """Eq. 7's ``sum(sqr(x^ - x), -1)`` on a fused Bernoulli sample nothing else reads becomes one op:
    the sums of the sample the separate ops draw, exact for binary x, float32-rounded for other x."""
    from parmesan_compat.layers.sample import bernoulli_sample

    rng = np.random.default_rng(12)
    m = rng.uniform(-8, 8, (130, 784)).astype(np.float32)
    b = rng.uniform(-4, 4, 784).astype(np.float32)
    u = rng.random((130, 784), dtype=np.float32)
    binary = (rng.random((130, 784)) < 0.3).astype(np.float32)
    grey = rng.random((130, 784), dtype=np.float32)
    with float32():
        us, ms, bs, xs = pt.matrix("u"), pt.matrix("m"), pt.vector("b"), pt.matrix("x")
        sample = bernoulli_sample(pt.sigmoid(ms + bs.dimshuffle("x", 0)), us)
        fused = pytensor.function([us, ms, bs, xs], pt.sum(pt.sqr(sample - xs), axis=-1), mode=compile_mode("c"))
        swapped = pytensor.function([us, ms, bs, xs], pt.sum(pt.sqr(xs - sample), axis=-1), mode=compile_mode("c"))
        separate = pytensor.function(
            [us, ms, bs, xs],
            [pt.sum(pt.sqr(sample - xs), axis=-1), sample],
            mode=compile_mode("c"),
        )
    for f in (fused, swapped):
        assert [type(n.op) for n in f.maker.fgraph.apply_nodes] == [fast_bernoulli.BernoulliSampleSquaredDistanceRows]
    # where the sample is read elsewhere too, it is drawn once and the distance summed from it
    assert not [
        n
        for n in separate.maker.fgraph.apply_nodes
        if isinstance(n.op, fast_bernoulli.BernoulliSampleSquaredDistanceRows)
    ]
    for x in (binary, grey):
        expected, drawn = separate(u, m, b, x)
        if x is binary:
            np.testing.assert_array_equal(fused(u, m, b, x), expected)
        np.testing.assert_allclose(fused(u, m, b, x), expected, rtol=1e-6)
        np.testing.assert_allclose(swapped(u, m, b, x), expected, rtol=1e-6)
        numpy_sums = np.square(drawn.astype(np.float64) - x).sum(axis=1)
        np.testing.assert_allclose(fused(u, m, b, x), numpy_sums, rtol=1e-6)
        for layout in ((np.asfortranarray(u), m, x), (u, np.asfortranarray(m), np.asfortranarray(x))):
            np.testing.assert_allclose(fused(layout[0], layout[1], b, layout[2]), expected, rtol=1e-6)
    direct = fast_bernoulli.bernoulli_sample_squared_distance_rows
    with float32():
        py = pytensor.function([us, ms, bs, xs], direct(us, ms, bs, xs), mode="FAST_COMPILE")
    np.testing.assert_allclose(py(u, m, b, grey), fused(u, m, b, grey), rtol=1e-6)


def test_loading_the_row_ops_keeps_subnormals():
    """Compiling and running our C ops must not switch the process to flush-to-zero
    (a module built with -ffast-math does that when loaded), which would change every
    other float computation in the process."""
    import subprocess
    import sys

    code = (
        "import numpy as np, pytensor, pytensor.tensor as pt\n"
        "from untapped.fast import bernoulli as fast_bernoulli, tanh as fast_tanh\n"
        "from untapped.backend import compile_mode, float32\n"
        "with float32():\n"
        "    a, b, x, u = pt.matrix('a'), pt.vector('b'), pt.matrix('x'), pt.matrix('u')\n"
        "    outs = [fast_tanh.bias_tanh(a, b), fast_bernoulli.BernoulliLogLikRows()(x, a), "
        "fast_bernoulli.bernoulli_sample_logits(u, a)]\n"
        "    outs.append(pytensor.grad(outs[1].sum(), a))\n"
        "    f = pytensor.function([a, b, x, u], outs, mode=compile_mode('c'))\n"
        "m = np.ones((3, 20), np.float32)\n"
        "f(m, m[0], m, m)\n"
        "print(np.float32(1e-39) * np.float32(1.0), np.float64(1e-310) * 1.0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    tiny32, tiny64 = (float(v) for v in result.stdout.split())
    assert tiny32 > 0.0 and tiny64 > 0.0
