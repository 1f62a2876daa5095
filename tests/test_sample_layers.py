"""The sampling functions and Lasagne layers of ``parmesan_compat.layers.sample``.

Outputs are compared with the same draws computed in NumPy float64 from the fed
noise; the Bernoulli draw's gradient must be exactly zero (the 2017 Theano
behaviour); the reparameterisation gradients of the Gaussian and Concrete layers
are compared with central finite differences of float64 graphs.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import special

from parmesan_compat.backend import load_lasagne
from parmesan_compat.layers.sample import (
    BernoulliSampleLayer,
    ConcreteSampleLayer,
    GaussianSampleLayer,
    bernoulli_sample,
    gaussian_sample,
    gumbel_from_uniform,
)
from untapped.backend import compile_mode, float32

lasagne = load_lasagne()

L = lasagne.layers
N_CLASSES, N_LATENT, N_PIXELS = 10, 2, 6
B = 64  # rows fed to the float32 function


def f32(a):
    return np.asarray(a, dtype=np.float32)


def numpy_gumbel(u):
    """The original's guarded Gumbel transform, in float64."""
    return -np.log(-np.log(u.astype(np.float64) + 1e-4) + 1e-4)


@pytest.fixture(scope="module")
def layers():
    l_mean = L.InputLayer((None, N_LATENT), name="mean")
    l_std = L.InputLayer((None, N_LATENT), name="std")
    l_eps = L.InputLayer((None, N_LATENT), name="eps")
    l_logits = L.InputLayer((None, N_CLASSES), name="logits")
    l_gumbel_u = L.InputLayer((None, N_CLASSES), name="gumbel_uniform")
    l_p = L.InputLayer((None, N_PIXELS), name="p")
    l_bern_u = L.InputLayer((None, N_PIXELS), name="bernoulli_uniform")
    return dict(
        inputs=dict(mean=l_mean, std=l_std, eps=l_eps, logits=l_logits, gumbel_u=l_gumbel_u, p=l_p, bern_u=l_bern_u),
        gaussian=GaussianSampleLayer(l_mean, l_std, l_eps),
        concrete=ConcreteSampleLayer(l_logits, l_gumbel_u),
        concrete_half=ConcreteSampleLayer(l_logits, l_gumbel_u, temperature=0.5),
        bernoulli=BernoulliSampleLayer(l_p, l_bern_u),
    )


@pytest.fixture(scope="module")
def outputs32(layers):
    """Every layer, deterministic and not, plus the bare Bernoulli draw and its gradient: one float32 function."""
    names = ("mean", "std", "eps", "logits", "gumbel_u", "p", "bern_u")
    with float32():
        sym = {name: pt.matrix(name) for name in names}
        given = {layers["inputs"][name]: sym[name] for name in names}
        outs = {}
        for key in ("gaussian", "concrete", "concrete_half", "bernoulli"):
            for det in (False, True):
                outs[(key, det)] = L.get_output(layers[key], inputs=given, deterministic=det)
        draw = bernoulli_sample(sym["p"], sym["bern_u"])
        weights = pt.constant(f32(np.random.default_rng(3).normal(size=(B, N_PIXELS))))
        # p enters only through the draw; pytensor.grad must neither raise nor disconnect
        outs["bernoulli_grad"] = pytensor.grad(pt.sum(weights * draw), sym["p"])
        outs["layer_grad"] = pytensor.grad(pt.sum(weights * outs[("bernoulli", False)]), sym["p"])
        outs["draw"] = draw
        outs["gumbel"] = gumbel_from_uniform(sym["gumbel_u"])
        outs["gaussian_fn"] = gaussian_sample(sym["mean"], sym["std"], sym["eps"])
        assert all(o.dtype == "float32" for o in outs.values()), {k: o.dtype for k, o in outs.items()}
        keys = list(outs)
        fn = pytensor.function([sym[n] for n in names], [outs[k] for k in keys], mode=compile_mode("c"))
    assert not [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", None) == "float64"]

    rng = np.random.default_rng(7)
    b = B
    feed = dict(
        mean=f32(rng.normal(0, 2, size=(b, N_LATENT))),
        std=f32(rng.uniform(0.01, 2, size=(b, N_LATENT))),
        eps=f32(rng.normal(size=(b, N_LATENT))),
        logits=f32(rng.normal(0, 3, size=(b, N_CLASSES))),
        # rows 1.. stay below 1 - 1e-3; row 0 holds the extremes (see test_concrete_layer)
        gumbel_u=f32(rng.uniform(0, 1 - 1e-3, size=(b, N_CLASSES))),
        p=f32(rng.uniform(size=(b, N_PIXELS))),
        bern_u=f32(rng.uniform(size=(b, N_PIXELS))),
    )
    feed["gumbel_u"][0] = [0.0, 1e-7, 1e-4, 0.5, 1 - 1e-7, np.float32(1 - 1e-4), 0.999, 0.3, 0.01, 0.9]
    feed["p"][0] = [0.0, 1.0, 0.5, 0.5, 0.25, 0.75]
    feed["bern_u"][0] = [0.0, 0.999, 0.5, 0.49, 0.25, 0.75]  # ties u == p give 0 (strict u < p)
    feed["p"][1] = [0.5, 0.5, np.nextafter(f32(0.5), f32(0)), np.nextafter(f32(0.5), f32(1)), 0.0, 1.0]
    values = fn(*[feed[n] for n in names])
    assert all(v.dtype == np.float32 for v in values)
    return feed, dict(zip(keys, values))


def test_bernoulli_sample_is_u_less_than_p_with_exactly_zero_gradient(outputs32):
    feed, out = outputs32
    expected = (feed["bern_u"] < feed["p"]).astype(np.float32)
    np.testing.assert_array_equal(out["draw"], expected)
    np.testing.assert_array_equal(out["draw"][0], [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(out["bernoulli_grad"], np.zeros_like(feed["p"]))
    np.testing.assert_array_equal(out["layer_grad"], np.zeros_like(feed["p"]))
    assert out["bernoulli_grad"].shape == feed["p"].shape


def test_bernoulli_layer(outputs32, layers):
    feed, out = outputs32
    np.testing.assert_array_equal(out[("bernoulli", False)], (feed["bern_u"] < feed["p"]).astype(np.float32))
    np.testing.assert_array_equal(out[("bernoulli", True)], (feed["p"] >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(out[("bernoulli", True)][1], [1, 1, 0, 1, 0, 1])  # p = 0.5 exactly gives 1
    assert layers["bernoulli"].output_shape == (None, N_PIXELS)
    assert out[("bernoulli", False)].shape == feed["p"].shape


def test_gaussian_layer(outputs32, layers):
    feed, out = outputs32
    m, s, e = (feed[k].astype(np.float64) for k in ("mean", "std", "eps"))
    np.testing.assert_allclose(out[("gaussian", False)], m + s * e, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["gaussian_fn"], m + s * e, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out[("gaussian", True)], feed["mean"])
    assert layers["gaussian"].output_shape == (None, N_LATENT)
    assert out[("gaussian", False)].shape == feed["mean"].shape


def test_concrete_layer(outputs32, layers):
    feed, out = outputs32
    u = feed["gumbel_u"].astype(np.float64)
    g = numpy_gumbel(feed["gumbel_u"])
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(out["gumbel"]))
    # u = 0 gives the guard's floor g = -log(-log(1e-4) + 1e-4) = -2.22, not -inf
    np.testing.assert_allclose(out["gumbel"][0, 0], -np.log(-np.log(1e-4) + 1e-4), rtol=1e-6)
    # For u within ~1e-4 of 1, a = -log(u + 1e-4) + 1e-4 ~ 1 - u cancels in float32: an
    # absolute error of ~1 ulp at 1 (1.2e-7) in a, i.e. ~1.2e-7 / a in g = -log a.
    a = -np.log(u + 1e-4) + 1e-4
    tolerance = 1e-5 * (1 + np.abs(g)) + 2.5e-7 / a
    assert np.all(np.abs(out["gumbel"] - g) <= tolerance)
    np.testing.assert_allclose(out["gumbel"][1:], g[1:], rtol=1e-5, atol=1e-5)
    logits = feed["logits"].astype(np.float64)
    for key, tau in (("concrete", 1.0), ("concrete_half", 0.5)):
        sample = out[(key, False)]
        expected = special.softmax((logits + g) / tau, axis=1)
        np.testing.assert_allclose(sample[1:], expected[1:], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sample.sum(axis=1), 1.0, atol=1e-6)
        assert np.all(sample >= 0)
        deterministic = out[(key, True)]
        np.testing.assert_allclose(deterministic, special.softmax(logits, axis=1), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(deterministic.sum(axis=1), 1.0, atol=1e-6)
        assert layers[key].output_shape == (None, N_CLASSES)
        assert sample.shape == feed["logits"].shape


def central_differences(fn, args, index, h=1e-6):
    """d fn / d args[index], elementwise, by central differences (fn returns a float64 scalar)."""
    base = [np.array(a, dtype=np.float64) for a in args]
    grad = np.zeros_like(base[index])
    for pos in np.ndindex(grad.shape):
        plus = [a.copy() for a in base]
        minus = [a.copy() for a in base]
        plus[index][pos] += h
        minus[index][pos] -= h
        grad[pos] = (fn(*plus) - fn(*minus)) / (2 * h)
    return grad


def test_reparameterisation_gradients_match_finite_differences(layers):
    """Gradients of a random linear functional of each sample w.r.t. all its inputs, float64 graphs."""
    rng = np.random.default_rng(11)
    b = 3
    sym = {n: pt.matrix(n, dtype="float64") for n in ("mean", "std", "eps", "logits", "gumbel_u")}
    given = {layers["inputs"][n]: sym[n] for n in sym}
    w_gauss = rng.normal(size=(b, N_LATENT))
    w_conc = rng.normal(size=(b, N_CLASSES))
    gauss = L.get_output(layers["gaussian"], inputs=given)
    cost_gauss = pt.sum(w_gauss * gauss)
    cost_conc = [pt.sum(w_conc * L.get_output(layers[k], inputs=given)) for k in ("concrete", "concrete_half")]
    assert gauss.dtype == "float64" and all(c.dtype == "float64" for c in cost_conc)
    gauss_in = [sym[n] for n in ("mean", "std", "eps")]
    conc_in = [sym["logits"], sym["gumbel_u"]]
    grads = pytensor.grad(cost_gauss, gauss_in)
    for c in cost_conc:
        grads += pytensor.grad(c, conc_in)
    mode = compile_mode("c")
    all_in = gauss_in + conc_in
    fn_grads = pytensor.function(all_in, grads, mode=mode)
    fn_costs = pytensor.function(all_in, [cost_gauss] + cost_conc, mode=mode)

    values = [
        rng.normal(size=(b, N_LATENT)),
        rng.uniform(0.1, 2, size=(b, N_LATENT)),
        rng.normal(size=(b, N_LATENT)),
        rng.normal(0, 2, size=(b, N_CLASSES)),
        rng.uniform(0.05, 0.95, size=(b, N_CLASSES)),
    ]
    analytic = fn_grads(*values)
    # closed form for the Gaussian: d/dmean = w, d/dstd = w eps, d/deps = w std
    np.testing.assert_allclose(analytic[0], w_gauss, rtol=1e-12)
    np.testing.assert_allclose(analytic[1], w_gauss * values[2], rtol=1e-12)
    np.testing.assert_allclose(analytic[2], w_gauss * values[1], rtol=1e-12)
    k = 0
    for which in range(3):  # gaussian, concrete, concrete_half
        inputs = (0, 1, 2) if which == 0 else (3, 4)
        for index in inputs:
            numeric = central_differences(lambda *a: fn_costs(*a)[which], values, index)
            np.testing.assert_allclose(
                analytic[k], numeric, rtol=1e-6, atol=1e-7, err_msg=f"output {which}, input {index}"
            )
            assert np.any(np.abs(analytic[k]) > 1e-3)  # a live gradient, not a vacuous match
            k += 1
