"""Each fast kernel computes its plain twin's formula (:mod:`untapped.paper.kernels`), checked against NumPy."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.tensor.random import shared_rng

from untapped.backend import compile_mode, float32
from untapped.fast.kernels import FAST
from untapped.paper.kernels import PLAIN


def _nonlinearity(name, kernels):
    return {"tanh": kernels.tanh, "identity": lambda a: a, "sigmoid": pt.sigmoid}[name]


@pytest.mark.parametrize("widths", [(7,), (7, 3)])
@pytest.mark.parametrize("nonlinearity", ["tanh", "identity", "sigmoid"])
def test_dense_is_the_dense_layer_on_the_concatenation(widths, nonlinearity):
    rng = np.random.default_rng(len(widths) * 10 + len(nonlinearity))
    xs = [rng.standard_normal((9, w)).astype(np.float32) for w in widths]
    W = (rng.standard_normal((sum(widths), 5)) * 0.5).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    g = rng.standard_normal((9, 5)).astype(np.float32)
    results = {}
    for kernels in (PLAIN, FAST):
        with float32():
            inputs = [pt.matrix(f"x{i}") for i in range(len(widths))]
            Wv, bv = pt.matrix("W"), pt.vector("b")
            out = kernels.dense(inputs, list(widths), Wv, bv, _nonlinearity(nonlinearity, kernels))
            grads = pytensor.grad(pt.sum(out * g), [Wv, bv, *inputs])
            f = pytensor.function([*inputs, Wv, bv], [out, *grads], mode=compile_mode("c"))
        results[kernels.name] = f(*xs, W, b)
    x = np.concatenate(xs, axis=1).astype(np.float64)
    a = x @ W + b
    h = {"tanh": np.tanh, "identity": lambda v: v, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[nonlinearity](a)
    d = g * {"tanh": 1 - h**2, "identity": np.ones_like(h), "sigmoid": h * (1 - h)}[nonlinearity]
    expected = [h, x.T @ d, d.sum(0)] + np.split(d @ W.T.astype(np.float64), np.cumsum(widths)[:-1], axis=1)
    for name, got in results.items():
        for e, v in zip(expected, got):
            np.testing.assert_allclose(v, e, rtol=2e-5, atol=2e-6, err_msg=name)


def test_bernoulli_log_lik_rows_is_the_clipped_bernoulli_log_mass_and_its_gradient():
    rng = np.random.default_rng(2)
    logits = rng.uniform(-15, 15, (11, 784))
    # away from the clip's edges (|logit| = log(1e5 - 1)), where float32 and float64 sigmoids disagree on "inside"
    edge = np.log(1e5 - 1)
    logits = np.where(np.abs(np.abs(logits) - edge) < 0.05, logits + 0.2 * np.sign(logits), logits).astype(np.float32)
    x = (rng.random((11, 784)) < 0.3).astype(np.float32)
    g = rng.standard_normal(11).astype(np.float32)
    results = {}
    for kernels in (PLAIN, FAST):
        with float32():
            xv, av = pt.matrix("x"), pt.matrix("a")
            value = kernels.bernoulli_log_lik_rows(xv, pt.sigmoid(av))
            f = pytensor.function([xv, av], [value, pytensor.grad(pt.sum(value * g), av)], mode=compile_mode("c"))
        results[kernels.name] = f(x, logits)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    lo, hi = float(np.float32(1e-5)), float(np.float32(1 - 1e-5))  # the clip's bounds as float32 graphs hold them
    c = np.clip(p, lo, hi)
    expected_value = (x * np.log(c) + (1 - x) * np.log(1 - c)).sum(1)
    inside = (p >= lo) & (p <= hi)
    expected_grad = g[:, None] * inside * (x / c - (1 - x) / (1 - c)) * p * (1 - p)
    for name, (value, grad) in results.items():
        # log(1 - c) of a float32 sigmoid near 1 carries its rounding: a few 1e-5 over 784 terms
        np.testing.assert_allclose(value, expected_value, rtol=3e-5, err_msg=name)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("size", [(7, 3), (1100, 1000)])  # the second is split across threads by FAST
def test_uniform_draws_are_numpys_float32_stream_in_both(size):
    draws, states = {}, {}
    for kernels in (PLAIN, FAST):
        rng = shared_rng(np.random.default_rng(11))
        next_rng, u = kernels.uniform(rng, size)
        f = pytensor.function([], u, updates={rng: next_rng}, mode=compile_mode("c"))
        draws[kernels.name] = [f(), f()]
        states[kernels.name] = rng.get_value().bit_generator.state
    numpy_rng = np.random.default_rng(11)
    expected = [numpy_rng.random(size, dtype=np.float32) for _ in range(2)]
    for name in draws:
        for got, e in zip(draws[name], expected):
            assert got.dtype == np.float32
            assert np.array_equal(got, e), name
        assert states[name] == numpy_rng.bit_generator.state, name
