"""The log densities of ``parmesan_compat.distributions`` against independent computations.

Every PyTensor expression is built and compiled inside ``untapped.backend.float32()``
in the project's C mode, fed float32 arrays, and compared with SciPy (Gaussian,
Bernoulli, uniform), with the closed-form binary Concrete density of Maddison,
Mnih & Teh (2016) (k = 2), with the total mass of the density over the simplex
(k = 3, quadrature of the PyTensor values), and with a histogram of Gumbel-softmax
samples drawn by ``concrete_sample`` from uniform noise (k = 2).
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import special, stats

from parmesan_compat.distributions import log_bernoulli, log_concrete, log_normal, log_uniform
from parmesan_compat.layers.sample import concrete_sample
from untapped.backend import compile_mode, float32

TAUS = (0.5, 1.0, 2.0)  # temperatures; the original hard-codes 1
LOW, HIGH = -1.5, 1.5  # the paper's box (exactly representable in float32)
PI_LOW, PI_HIGH = -np.pi / 2, np.pi / 2  # the code's box


def no_float64(fn):
    """No variable of the compiled graph is float64 (no silent upcast anywhere inside)."""
    return [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", None) == "float64"]


@pytest.fixture(scope="module")
def fns():
    """All density graphs of this module, one compiled function per family (float32, C mode)."""
    mode = compile_mode("c")
    with float32():
        x, mean, std, p = (pt.matrix(n) for n in ("x", "mean", "std", "p"))
        y, logits, uniform = pt.matrix("y"), pt.matrix("logits"), pt.matrix("uniform")
        v = pt.vector("v")
        out = {
            "normal": [log_normal(x, mean, std)],
            "bernoulli": [log_bernoulli(x, p)],
            "uniform": [log_uniform(v, LOW, HIGH), log_uniform(v, PI_LOW, PI_HIGH)],
            "concrete": [log_concrete(y, logits, temperature=t) for t in TAUS],
            "sample": [concrete_sample(logits, uniform, temperature=t) for t in TAUS],
        }
        ins = {
            "normal": [x, mean, std],
            "bernoulli": [x, p],
            "uniform": [v],
            "concrete": [y, logits],
            "sample": [logits, uniform],
        }
        for name, outs in out.items():
            assert all(o.dtype == "float32" for o in outs), (name, [o.dtype for o in outs])
        return {name: pytensor.function(ins[name], out[name], mode=mode) for name in out}


def f32(a):
    return np.asarray(a, dtype=np.float32)


def test_graphs_stay_float32(fns):
    """Symbolic outputs are float32 (checked in the fixture) and so is every compiled intermediate."""
    for name, fn in fns.items():
        assert not no_float64(fn), (name, no_float64(fn))
    rng = np.random.default_rng(0)
    a = f32(rng.uniform(0.1, 0.9, size=(3, 4)))
    results = [
        fns["normal"](a, a, a),
        fns["bernoulli"](f32(a > 0.5), a),
        fns["uniform"](a[0]),
        fns["concrete"](a / a.sum(1, keepdims=True), a),
        fns["sample"](a, a),
    ]
    for outs in results:
        assert all(o.dtype == np.float32 for o in outs)


def test_log_normal_matches_scipy(fns):
    rng = np.random.default_rng(1)
    shape = (50, 7)
    x = f32(rng.normal(0, 2, size=shape))
    mean = f32(rng.normal(0, 2, size=shape))
    std = f32(rng.uniform(0.0, 3.0, size=shape))
    std[0] = 0.0  # s = std + 1e-5 only: the eps keeps the density finite
    x[0] = mean[0] + f32(rng.normal(0, 1e-5, size=shape[1]))
    std[1] = 1e-3
    (got,) = fns["normal"](x, mean, std)
    ref = stats.norm.logpdf(x.astype(np.float64), mean.astype(np.float64), std.astype(np.float64) + 1e-5)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_log_bernoulli_matches_scipy_with_clip(fns):
    p_values = [0.0, 1e-7, 1e-5, 0.01, 0.3, 0.5, 0.77, 1 - 1e-5, 1 - 1e-7, 1.0]
    p = f32(np.tile(p_values, (2, 1)))
    x = f32(np.repeat([[0.0], [1.0]], len(p_values), axis=1))
    (got,) = fns["bernoulli"](x, p)
    ref = stats.bernoulli.logpmf(x.astype(int), np.clip(p.astype(np.float64), 1e-5, 1 - 1e-5))
    # float32 cannot hold 1 - 1e-5 exactly (it rounds to 1 - 1.00136e-5), so where p is
    # clipped from above log(1 - p) is off by log(1.00136) = 1.4e-3; elsewhere float32 accuracy.
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-6)
    upper = p.astype(np.float64) < 1 - 1e-5
    np.testing.assert_allclose(got[:, upper[0]], ref[:, upper[0]], rtol=1e-6, atol=1e-6)
    # the clip bounds every term below by log(1e-5), attained at the wrong certain guesses
    floor = np.log(1e-5)
    assert got.min() >= floor - 2e-3
    np.testing.assert_allclose(got[1, 0], floor, atol=1e-5)  # x = 1, p = 0
    np.testing.assert_allclose(got[0, -1], floor, atol=2e-3)  # x = 0, p = 1
    np.testing.assert_allclose(got[1, -1], np.log1p(-1e-5), atol=1e-6)  # x = 1, p = 1
    np.testing.assert_allclose(got[0, 0], np.log1p(-1e-5), atol=1e-6)  # x = 0, p = 0


def test_log_uniform_inside_and_outside(fns):
    v = f32([-3.0, -1.5001, -1.5, -1.0, 0.0, 0.7, 1.5, 1.5001, 2.0, -1.57, 1.57, 1.58, -1.58])
    got_paper, got_code = fns["uniform"](v)
    ref = stats.uniform.logpdf(v.astype(np.float64), LOW, HIGH - LOW)
    np.testing.assert_array_equal(np.isinf(got_paper), np.isinf(ref))
    np.testing.assert_allclose(got_paper, ref, rtol=1e-6)
    assert np.all(got_paper[np.isinf(got_paper)] < 0)
    inside = np.abs(v) < np.pi / 2
    np.testing.assert_allclose(got_code[inside], -np.log(np.pi), rtol=1e-6)
    assert np.all(got_code[~inside] == -np.inf)


def binary_concrete_density(s, alpha, tau):
    """Density of s = y_1 for y ~ Concrete((alpha, 1), tau), y = (s, 1 - s).

    Maddison et al. define the Concrete density with respect to Lebesgue measure on the
    first k - 1 coordinates of the simplex, so for k = 2 the chart s -> (s, 1 - s) has unit
    Jacobian. Independently: y_1 = sigmoid((log alpha + L) / tau) with L ~ Logistic(0, 1),
    so P(y_1 <= s) = sigmoid(tau logit(s) - log alpha); differentiating,
    tau alpha s^(-tau-1) (1-s)^(-tau-1) / (alpha s^-tau + (1-s)^-tau)^2.
    """
    return tau * alpha * s ** (-tau - 1) * (1 - s) ** (-tau - 1) / (alpha * s**-tau + (1 - s) ** -tau) ** 2


def binary_concrete_cdf(s, alpha, tau):
    return special.expit(tau * special.logit(s) - np.log(alpha))


def test_binary_concrete_cdf_is_the_closed_form_antiderivative():
    """The two closed forms used below agree with each other (float64, central differences)."""
    s = np.linspace(0.01, 0.99, 99)
    h = 1e-6
    for tau in TAUS:
        for alpha in (0.3, 1.0, 4.0):
            fd = (binary_concrete_cdf(s + h, alpha, tau) - binary_concrete_cdf(s - h, alpha, tau)) / (2 * h)
            np.testing.assert_allclose(binary_concrete_density(s, alpha, tau), fd, rtol=1e-6)


def test_log_concrete_k2_matches_binary_concrete_closed_form(fns):
    s = np.concatenate([np.linspace(0.001, 0.999, 60), [0.02, 0.5, 0.98]])
    logit_pairs = [(0.0, 0.0), (1.3, -0.4), (-2.0, 0.5), (3.0, -3.0)]
    ss = np.tile(s, len(logit_pairs))
    y = f32(np.stack([ss, 1 - ss], axis=1))
    logits = f32(np.repeat(logit_pairs, len(s), axis=0))
    outs = fns["concrete"](y, logits)
    # alpha = p1/p2 = exp(l1 - l2), from the float32 inputs actually fed
    y64, l64 = y.astype(np.float64), logits.astype(np.float64)
    alpha = np.exp(l64[:, 0] - l64[:, 1])
    for tau, got in zip(TAUS, outs):
        assert got.shape == (len(ss),)
        ref = np.log(binary_concrete_density(y64[:, 0], alpha, tau))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-4, err_msg=f"tau={tau}")


def test_log_concrete_k3_integrates_to_one_over_the_simplex(fns):
    """Mass of exp(log_concrete) over {y1, y2 >= 0, y1 + y2 <= 1} with measure dy1 dy2.

    Duffy map y1 = u, y2 = (1 - u) v, y3 = (1 - u)(1 - v) (Jacobian 1 - u) from the unit
    square, tensor Gauss-Legendre rule; only the nodes are NumPy, the integrand values
    are the PyTensor function's. tau = 0.5 is left out: its corner singularities
    (density ~ r^-1.5 at the vertices for k = 3) make the rule converge only like 1/n.
    """
    n = 200
    t, w = np.polynomial.legendre.leggauss(n)
    t, w = (t + 1) / 2, w / 2
    u, v = (a.ravel() for a in np.meshgrid(t, t, indexing="ij"))
    weights = np.outer(w, w).ravel() * (1 - u)
    y = f32(np.stack([u, (1 - u) * v, (1 - u) * (1 - v)], axis=1))
    for row in ([1.0, -0.5, 0.2], [0.0, 0.0, 0.0], [2.0, 0.0, -1.0]):
        logits = f32(np.tile(row, (len(u), 1)))
        outs = fns["concrete"](y, logits)
        for tau, got in zip(TAUS, outs):
            if tau < 1:
                continue
            mass = np.sum(weights * np.exp(got.astype(np.float64)))
            assert abs(mass - 1) < 1e-4, (row, tau, mass)


def test_concrete_sample_histogram_matches_log_concrete_k2(fns):
    """Gumbel-softmax draws of y_1 fall into bins with the probabilities the density gives.

    The original's guard g = -log(-log(u + 1e-4) + 1e-4) bounds the Gumbel noise
    below (g >= -2.22) and shifts it by ~1e-2 only when u < 1e-3: that moves well
    under 1e-3 of the mass and only into the far tails, so the bins stay in
    [0.02, 0.98] and the per-bin tolerance is statistical (5 sigma).
    """
    rng = np.random.default_rng(2024)
    n = 200_000
    edges = np.linspace(0.02, 0.98, 25)
    gl_t, gl_w = np.polynomial.legendre.leggauss(20)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    s_nodes = (mid[:, None] + half[:, None] * gl_t[None, :]).ravel()
    for l1, l2 in ((0.0, 0.0), (0.8, -0.6)):
        logits = f32(np.tile([l1, l2], (n, 1)))
        uniform = f32(rng.uniform(size=(n, 2)))
        samples = fns["sample"](logits, uniform)
        # bin probabilities by integrating the PyTensor density (20-point rule per bin)
        y = f32(np.stack([s_nodes, 1 - s_nodes], axis=1))
        dens = fns["concrete"](y, f32(np.tile([l1, l2], (len(s_nodes), 1))))
        alpha = np.exp(np.float64(np.float32(l1)) - np.float64(np.float32(l2)))
        for tau, sample, log_dens in zip(TAUS, samples, dens):
            np.testing.assert_allclose(sample.sum(axis=1), 1.0, atol=1e-6)
            probs = (np.exp(log_dens.astype(np.float64)).reshape(len(mid), -1) * gl_w).sum(axis=1) * half
            cdf = binary_concrete_cdf(edges, alpha, tau)
            np.testing.assert_allclose(probs, np.diff(cdf), rtol=1e-4, atol=1e-7)
            counts, _ = np.histogram(sample[:, 0], bins=edges)
            sigma = np.sqrt(n * probs * (1 - probs))
            z = (counts - n * probs) / sigma
            assert np.max(np.abs(z)) < 5, (tau, (l1, l2), z)
            # the mass outside [0.02, 0.98] too
            outside = np.mean((sample[:, 0] < edges[0]) | (sample[:, 0] >= edges[-1]))
            expected = 1 - (cdf[-1] - cdf[0])
            assert abs(outside - expected) < 5 * np.sqrt(expected * (1 - expected) / n) + 1e-3
