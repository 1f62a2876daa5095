"""The model against the original code (``docs/original.md``) and an independent NumPy port.

``numpy_port`` is written from a reading of the original, not from untapped's code; here the
two are compared intermediate by intermediate, term by term, gradient by
gradient and update by update. Small models keep the suite fast; compiled
models are shared through module-scoped fixtures, and every test that uses a
shared model first resets its parameters and optimiser state.
"""

import copy

import numpy as np
import pytensor
import pytest
from sklearn.base import clone

from support import numpy_port as port
from untapped import presets
from untapped.backend import compile_mode, float32
from untapped.fast import bernoulli as fast_bernoulli
from untapped.fast import rows as fast_rows
from untapped.model import SSDGM
from untapped.paper import passes, samplers, terms

SMALL = dict(n_features=20, classifier_hidden=(8, 6), encoder_hidden=(4, 3), decoder_hidden=(16, 12))
NETWORKS = ("classifier", "encoder", "decoder")

#: Float32 agreement of untapped and the port: 1e-5 relative, plus an absolute
#: 1e-6 for entries near zero. Such entries come out of cancellations of O(1)
#: operands (z = -pi/2 + pi s, logits summed over hidden units), whose float32
#: rounding (ulp(1) = 1.2e-7, a few ulps after a dot product or the flow)
#: leaves an absolute error of a few 1e-7 that no relative bound can cover.
TRACE_RTOL, TRACE_ATOL = 1e-5, 1e-6
#: float32 gradients against float64 central differences.
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-6

#: The gradient-flow table of docs/fidelity.md: which networks each term trains.
GRADIENT_PATTERN = {
    #                 classifier  encoder  decoder
    "x_to_y_loss":    (True,      False,   False),
    "y_to_x_loss":    (False,     False,   False),  # only through a Bernoulli sample: zero gradient
    "labeled_elbo":   (False,     True,    True),
    "unlabeled_elbo": (True,      True,    True),
    "reverse_elbo":   (True,      False,   True),   # decoder: score term only; z observed
}  # fmt: skip


def small(**kwargs):
    return SSDGM(**{**SMALL, "seed": 7, **kwargs})


def corners(k=10, peak=0.95):
    rest = (1.0 - peak) / (k - 1)
    return (np.full((k, k), rest) + np.eye(k) * (peak - rest)).astype(np.float32)


def make_batch(rng, n_labeled=12, n_unlabeled=9, n_features=20):
    return dict(
        labeled_x=(rng.rand(n_labeled, n_features) < 0.3).astype(np.float32),
        labeled_y=np.eye(10, dtype=np.float32)[rng.randint(0, 5, n_labeled)],
        unlabeled_x=(rng.rand(n_unlabeled, n_features) < 0.3).astype(np.float32),
        unfeatured_y=corners(),
        unfeatured_z=rng.uniform(-1.5, 1.5, (10, 2)).astype(np.float32),
    )


def perturbed(params, rng, scale=1.0):
    """Initial parameters moved so that the std head and every bias are non-zero."""
    return {k: (v * scale + 0.3 * rng.randn(*v.shape)).astype(np.float32) for k, v in params.items()}


def reset(model, params):
    model.set_param_values_by_name(params)
    model.set_optimizer_state(port.initial_adam_state(params))


def compare(actual, expected, rtol, atol, what):
    """Assert ``|a - e| <= atol + rtol |e|`` elementwise; return the max relative error over |e| > atol / rtol."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    bad = err > atol + rtol * np.abs(expected)
    assert not bad.any(), (
        f"{what}: {bad.sum()} of {bad.size} entries differ; max abs error {err.max():.3g}, "
        f"e.g. {actual[bad].ravel()[:3]} vs {expected[bad].ravel()[:3]}"
    )
    big = np.abs(expected) > atol / rtol
    return float((err[big] / np.abs(expected[big])).max()) if big.any() else 0.0


# ---------------------------------------------------------------------------
# Shared small models, parameters, data and noise


@pytest.fixture(scope="module")
def model():
    return small()


@pytest.fixture(scope="module")
def initial(model):
    """The small model's initial parameters (read before any test changes them)."""
    return model.param_values_by_name()


@pytest.fixture(scope="module")
def params(initial):
    return perturbed(initial, np.random.RandomState(0))


@pytest.fixture(scope="module")
def batch():
    return make_batch(np.random.RandomState(1))


@pytest.fixture(scope="module")
def noise(params, batch):
    """Noise whose Bernoulli uniforms are >= 0.01 away from every decoder mean (untapped and eq17 passes)."""
    raw = port.draw_noise(batch, np.random.default_rng(2))
    return port.separate_bernoulli_noise(params, batch, raw, margin=1e-2, reverse_elbo_variant="eq17")


def check_noise_margins(trace, noise, margin=1e-2):
    """No Bernoulli sample and no clip sits near its boundary (so float32/float64 and +-h agree)."""
    for source in ("labeled", "unfeatured"):
        mean = trace[f"{source}/x_mean"]
        assert np.abs(noise[f"{source}/bernoulli_uniform"] - mean).min() >= 0.99 * margin
    for source in ("labeled", "unlabeled", "unfeatured"):
        mean = trace[f"{source}/x_mean"]
        assert mean.min() > 1e-4 and mean.max() < 1 - 1e-4, "decoder mean near the 1e-5 clip"
    assert trace["labeled/y_sample"].min() > 1e-5, "Concrete sample near the KL clip"


# ---------------------------------------------------------------------------
# 1. Initial weights


def test_initial_weights_are_the_originals_bit_for_bit():
    model = SSDGM()  # full size, seed 1234
    names = model.param_names
    assert names == [
        "classifier/hidden1/W", "classifier/hidden1/b", "classifier/hidden2/W", "classifier/hidden2/b",
        "classifier/logits/W", "classifier/logits/b",
        "encoder/hidden1/W", "encoder/hidden1/b", "encoder/hidden2/W", "encoder/hidden2/b",
        "encoder/mean/W", "encoder/mean/b", "encoder/std/W", "encoder/std/b",
        "decoder/hidden1/W", "decoder/hidden1/b", "decoder/hidden2/W", "decoder/hidden2/b",
        "decoder/mean/W", "decoder/mean/b",
    ]  # fmt: skip
    values = dict(zip(names, model.get_param_values()))
    assert all(v.dtype == np.float32 for v in values.values())

    # The original's draws: RandomState(1234), Glorot(gain sqrt 2), in construction order (the original's
    # ``M12.py:77-162``).
    rng = np.random.RandomState(1234)
    glorot = [
        ("classifier/hidden1/W", (784, 50)), ("classifier/hidden2/W", (50, 50)), ("classifier/logits/W", (50, 10)),
        ("encoder/hidden1/W", (794, 10)), ("encoder/hidden2/W", (10, 10)), ("encoder/mean/W", (10, 2)),
        ("decoder/hidden1/W", (12, 250)), ("decoder/hidden2/W", (250, 500)), ("decoder/mean/W", (500, 784)),
    ]  # fmt: skip
    for name, (fan_in, fan_out) in glorot:
        std = np.sqrt(2) * np.sqrt(2.0 / (fan_in + fan_out))
        expected = rng.uniform(low=0.0 - np.sqrt(3) * std, high=0.0 + np.sqrt(3) * std, size=(fan_in, fan_out))
        expected = expected.astype(np.float32)
        assert values[name].shape == expected.shape, name
        assert np.array_equal(values[name].view(np.uint32), expected.view(np.uint32)), f"{name} differs"

    zero = [n for n in names if n.endswith("/b")] + ["encoder/std/W"]
    assert len(zero) == 11
    for name in zero:
        assert not values[name].any(), f"{name} should start at zero"
    assert values["encoder/std/W"].shape == (10, 2)

    sizes = {net: sum(v.size for n, v in values.items() if n.startswith(net)) for net in NETWORKS}
    assert sizes == {"classifier": 42_310, "encoder": 8_104, "decoder": 521_534}
    assert sum(sizes.values()) == 571_948

    # The foreign port's initialiser agrees, so reference bundles can start from it.
    for name, value in port.initial_params(seed=1234).items():
        assert np.array_equal(value, values[name]), name


# ---------------------------------------------------------------------------
# 2. Forward pass and terms against the NumPy port


def _trace_errors(model, params, batch, noise, **options):
    reset(model, params)
    ours = model.trace(batch, noise)
    theirs = port.trace(params, batch, noise, dtype=np.float32, **options)
    assert list(ours) == list(theirs)
    check_noise_margins(theirs, noise)
    errors = {}
    for key, expected in theirs.items():
        assert np.asarray(ours[key]).dtype == np.float32, key
        errors[key] = compare(ours[key], expected, TRACE_RTOL, TRACE_ATOL, key)
    for source in ("labeled", "unfeatured"):  # the samples agree exactly (noise chosen away from the means)
        assert np.array_equal(ours[f"{source}/x_sample"], theirs[f"{source}/x_sample"])
    return ours, theirs, errors


def test_trace_matches_numpy_port_untapped(model, params, batch, noise):
    ours, theirs, errors = _trace_errors(model, params, batch, noise)
    expected_keys = (
        [f"labeled/{k}" for k in "logits y_probs y_sample z_mean z_std z_tilde z z_log_det x_mean x_sample".split()]
        + [f"unlabeled/{k}" for k in "logits y_probs y_sample z_mean z_std z_tilde z z_log_det x_mean".split()]
        + [f"unfeatured/{k}" for k in "logits y_probs x_mean x_sample".split()]
        + [f"terms/{t}" for t in presets.TERMS]
        + ["total"]
    )
    assert list(ours) == expected_keys
    terms = {t: float(theirs[f"terms/{t}"]) for t in port.TERMS}
    assert float(ours["total"]) == pytest.approx(sum(port.UNTAPPED_COEFFICIENTS[t] * terms[t] for t in terms), rel=1e-6)
    # the port also takes the parameters as a list in Lasagne order
    assert port.total(list(params.values()), batch, noise) == theirs["total"]
    print(f"\nuntapped trace: max relative error {max(errors.values()):.2e}")


def test_trace_matches_numpy_port_m2(model, params, batch, noise):
    m2 = SSDGM.m2(**SMALL, seed=7)
    assert m2.coefficients == port.M2_COEFFICIENTS
    ours, theirs, errors = _trace_errors(m2, params, batch, noise, coefficients=port.M2_COEFFICIENTS)
    reset(model, params)
    untapped = model.trace(batch, noise)
    for t in presets.TERMS:  # same terms, different total
        assert float(ours[f"terms/{t}"]) == pytest.approx(float(untapped[f"terms/{t}"]), rel=1e-6)
    assert abs(float(ours["total"]) - float(untapped["total"])) > 0.1
    terms = {t: float(theirs[f"terms/{t}"]) for t in port.TERMS}
    # The original's M2: no reverse bound, the y->x loss kept (docs/fidelity.md item 27).
    expected = 0.1 * terms["labeled_elbo"] + 0.1 * terms["unlabeled_elbo"] + 1.0 * terms["x_to_y_loss"]
    expected += 0.01 * terms["y_to_x_loss"]
    assert float(ours["total"]) == pytest.approx(expected, rel=1e-6)
    print(f"\nM2 trace: max relative error {max(errors.values()):.2e}")


@pytest.fixture(scope="module")
def eq17_model():
    return small(reverse_elbo_variant="eq17")


def test_trace_matches_numpy_port_eq17(model, eq17_model, params, batch, noise):
    ours, theirs, errors = _trace_errors(eq17_model, params, batch, noise, reverse_elbo_variant="eq17")
    assert list(ours)[list(ours).index("unfeatured/x_sample") + 1 :][:4] == [
        "unfeatured/z_mean", "unfeatured/z_std", "unfeatured/z_tilde", "unfeatured/z_log_det",
    ]  # fmt: skip
    reset(model, params)
    code = model.trace(batch, noise)
    # eq. 17 subtracts log q(z_k|x^_k,y_k), which makes the term differ; the other four are untouched
    assert abs(float(ours["terms/reverse_elbo"]) - float(code["terms/reverse_elbo"])) > 1e-3
    for t in ("labeled_elbo", "unlabeled_elbo", "x_to_y_loss", "y_to_x_loss"):
        assert float(ours[f"terms/{t}"]) == pytest.approx(float(code[f"terms/{t}"]), rel=1e-6)
    # the observed z maps back through the flow onto itself
    z_back = port.flow(theirs["unfeatured/z_tilde"].astype(np.float64))
    np.testing.assert_allclose(z_back, batch["unfeatured_z"], atol=1e-6)
    print(f"\neq17 trace: max relative error {max(errors.values()):.2e}")


# ---------------------------------------------------------------------------
# 3. Gradients against central finite differences of the port (float64)


def _entries(gradients, rng, largest=3, random=2):
    """A few entries of every parameter: its largest gradients and some random ones."""
    out = {}
    for name, g in gradients.items():
        if name == "total":
            continue
        order = np.argsort(-np.abs(g).ravel(), kind="stable")[:largest]
        pick = list(order) + list(rng.choice(g.size, size=min(random, g.size), replace=False))
        out[name] = [np.unravel_index(i, g.shape) for i in dict.fromkeys(pick)]
    return out


@pytest.mark.parametrize("variant", ["code", "eq17"])
def test_gradients_match_finite_differences(variant, model, eq17_model, params, batch, noise):
    m = model if variant == "code" else eq17_model
    reset(m, params)
    ours = m.total_gradients(batch, noise)
    assert list(ours) == ["total"] + m.param_names
    check_noise_margins(port.trace(params, batch, noise, dtype=np.float64, reverse_elbo_variant="eq17"), noise)
    entries = _entries(ours, np.random.RandomState(3))
    fd = port.finite_difference_gradients(params, batch, noise, entries, step=1e-5, reverse_elbo_variant=variant)
    worst = 0.0
    for name, indices in entries.items():
        g = np.array([ours[name][i] for i in indices])
        assert np.abs(g).max() > 0, f"{name}: no gradient"
        worst = max(worst, compare(g, fd[name], GRAD_RTOL, GRAD_ATOL, f"d total / d {name}"))
    total32 = port.total(params, batch, noise, dtype=np.float32, reverse_elbo_variant=variant)
    total64 = port.total(params, batch, noise, dtype=np.float64, reverse_elbo_variant=variant)
    assert float(ours["total"]) == pytest.approx(float(total32), rel=1e-6)
    # float32 against float64: the reverse bound cancels O(100) Concrete log-density terms
    assert float(ours["total"]) == pytest.approx(total64, rel=1e-4)
    if variant == "eq17":  # its log q(z_k|x^_k,y_k) reaches the encoder; the code's reverse bound does not
        reset(model, params)
        code = model.total_gradients(batch, noise)
        for name in m.param_names:
            same = np.allclose(ours[name], code[name], rtol=1e-6, atol=1e-9)
            assert same != name.startswith("encoder/"), name
    print(f"\ngradients ({variant}): max relative error {worst:.2e}")


# ---------------------------------------------------------------------------
# 4. Which networks each term trains (docs/fidelity.md, Gradient flow)


def test_gradient_pattern_of_each_term(model, params, batch, noise):
    reset(model, params)
    graph = model.graph
    net_params = graph.networks.params
    terms = list(GRADIENT_PATTERN)
    with float32():
        outputs = [g for t in terms for g in pytensor.grad(graph.terms[t], net_params, disconnected_inputs="ignore")]
        fn = pytensor.function(
            list(graph.batch.values()) + list(graph.noise.values()),
            outputs,
            mode=compile_mode(model.mode),
            on_unused_input="ignore",
        )
    values = fn(*[batch[k] for k in graph.batch], *[noise[k] for k in graph.noise])
    observed, mixed = {}, []
    for i, term in enumerate(terms):
        grads = dict(zip(model.param_names, values[i * len(net_params) : (i + 1) * len(net_params)]))
        row = []
        for net in NETWORKS:
            nonzero = [bool(np.any(g != 0)) for n, g in grads.items() if n.startswith(net + "/")]
            assert all(np.all(np.isfinite(g)) for g in grads.values())
            if any(nonzero) and not all(nonzero):
                mixed.append((term, net, nonzero))
            row.append(any(nonzero))
        observed[term] = tuple(row)
    assert observed == GRADIENT_PATTERN
    assert not mixed, f"some but not all parameters of a network have a gradient: {mixed}"


# ---------------------------------------------------------------------------
# 5. One optimiser step against the port's update


@pytest.mark.parametrize("scale", [1.0, 4.0], ids=["norm<5", "norm>5"])
def test_optimizer_steps_match_numpy_port(scale, model, initial, batch, noise):
    params = perturbed(initial, np.random.RandomState(0), scale)
    noise = port.separate_bernoulli_noise(params, batch, noise)
    reset(model, params)
    expected_params, expected_state = params, port.initial_adam_state(params)
    norms, worst = [], 0.0
    for step in (1, 2):  # the second step starts from non-zero moments
        grads = model.total_gradients(batch, noise)
        norms.append(np.sqrt(sum(np.sum(grads[n].astype(np.float64) ** 2) for n in model.param_names)))
        expected_params, expected_state = port.original_update(
            expected_params, grads, expected_state, learning_rate=0.01, dtype=np.float32
        )
        total = model.step_with_noise(batch, noise, 0.01)
        assert total == pytest.approx(float(grads["total"]), rel=1e-6)
        state = model.optimizer_state()
        assert list(state) == list(expected_state)
        assert state["adam/t"] == step
        # The step recomputes the gradient (below): its rounding, up to ~1e-5 relative, moves each
        # parameter by that fraction of Adam's step (about lr = 0.01): an absolute 2e-7.
        for name, value in model.param_values_by_name().items():
            worst = max(worst, compare(value, expected_params[name], 1e-5, 2e-7, f"step {step}: {name}"))
        # The step recomputes the gradient in its own compiled graph, whose float32 rounding
        # differs from total_gradients' by up to ~1e-5 relative; the moments inherit it. Compare
        # m and sqrt(v) (Adam's scale, linear in g) to 1e-5 of each array's largest entry.
        for key, value in state.items():
            value, expected = np.asarray(value), np.asarray(expected_state[key])
            if key.startswith("adam/v/"):
                value, expected = np.sqrt(value), np.sqrt(expected)
            atol = 1e-5 * float(np.abs(expected).max())
            worst = max(worst, compare(value, expected, 1e-5, atol, f"step {step}: {key}"))
    assert (norms[0] > 5.0) == (scale > 1.0), (
        f"gradient norm {norms[0]:.2f}: this case should {'' if scale > 1 else 'not '}rescale"
    )
    print(f"\noptimizer steps (gradient norm {norms[0]:.2f}): max relative error {worst:.2e}")


def test_port_update_matches_lasagne_when_rescaling_and_clipping():
    """The port's norm/clip/Adam against Lasagne's norm rescale and our Adam, in the regime where
    both the norm rescale and the [-1, 1] clip act (the model's gradients seldom reach it)."""
    from parmesan_compat.backend import load_lasagne

    lasagne = load_lasagne()
    from untapped.updates import adam

    rng = np.random.RandomState(4)
    params = {"a": rng.randn(3, 4).astype(np.float32), "b": rng.randn(5).astype(np.float32)}
    grads = {"a": (rng.randn(3, 4) * 3).astype(np.float32), "b": (rng.randn(5) * 0.01).astype(np.float32)}
    grads["a"][0, 0] = 40.0  # norm >> 5 and, after rescaling, an entry > 1
    with float32():
        shared = [pytensor.shared(params[k].copy(), name=k) for k in params]
        given = [pytensor.tensor.matrix("ga"), pytensor.tensor.vector("gb")]
        scaled = lasagne.updates.total_norm_constraint(given, max_norm=5.0)
        clipped = [pytensor.tensor.clip(g, -1.0, 1.0) for g in scaled]
        updates = adam(clipped, shared, learning_rate=0.01, beta1=0.9, beta2=0.999, epsilon=1e-4)
        fn = pytensor.function(given, clipped, updates=updates)
    expected_params, state = params, None
    for _ in range(2):
        clipped_values = fn(grads["a"], grads["b"])
        assert np.abs(clipped_values[0]).max() == 1.0  # the clip acted
        expected_params, state = port.original_update(expected_params, grads, state, learning_rate=0.01)
        for var in shared:
            compare(var.get_value(), expected_params[var.name], 1e-5, 1e-7, var.name)
    assert state["adam/t"] == 2


# ---------------------------------------------------------------------------
# 6. Reproducibility and resume


@pytest.fixture(scope="module")
def training_data():
    rng = np.random.RandomState(5)
    data = make_batch(rng, n_labeled=30, n_unlabeled=25)
    indices = [
        (rng.randint(0, 30, 8), rng.randint(0, 25, 8), np.arange(8) % 10) for _ in range(4)
    ]
    return data, indices


def _train(model, indices, lr=0.01):
    return [model.train_step(*idx, learning_rate=lr) for idx in indices]


def _snapshot(model):
    return model.get_param_values(), model.optimizer_state(), copy.deepcopy(model.rng_states())


@pytest.mark.slow
def test_training_is_reproducible_and_resumable(training_data):
    data, indices = training_data
    a, b, c = small(seed=11), small(seed=11), small(seed=12)
    for m in (a, b, c):
        m.set_training_data(**data)

    # same seed: same initial parameters, same noise, bit-identical results
    for va, vb, vc in zip(a.get_param_values(), b.get_param_values(), c.get_param_values()):
        assert np.array_equal(va, vb)
    glorot = [n for n in a.param_names if n.endswith("/W") and n != "encoder/std/W"]
    for name in glorot:
        assert not np.array_equal(a.param_values_by_name()[name], c.param_values_by_name()[name]), name
    out_a, out_b, out_c = _train(a, indices[:2]), _train(b, indices[:2]), _train(c, indices[:2])
    assert out_a == out_b
    assert all(np.isfinite(v) for out in out_a for v in out.values())
    assert list(out_a[0]) == list(presets.TERMS) + ["total"]
    for va, vb in zip(a.get_param_values(), b.get_param_values()):
        assert np.array_equal(va, vb)
    probe = data["labeled_x"][:5]
    assert np.array_equal(a.predict_proba(probe), b.predict_proba(probe))
    # a different seed: different results
    assert all(oa["total"] != oc["total"] for oa, oc in zip(out_a, out_c))
    assert not np.array_equal(a.predict_proba(probe), c.predict_proba(probe))

    # resume: restore a's state into c (other seed, other generator states) and continue both
    params, opt, rngs = _snapshot(a)
    assert opt["adam/t"] == 2
    c.set_rng_states(rngs)
    c.set_param_values(params)
    c.set_optimizer_state(opt)
    assert _train(a, indices[2:]) == _train(c, indices[2:])
    for va, vc in zip(a.get_param_values(), c.get_param_values()):
        assert np.array_equal(va, vc)
    for (ka, sa), (kc, sc) in zip(a.optimizer_state().items(), c.optimizer_state().items()):
        assert ka == kc and np.array_equal(sa, sc)
    assert a.rng_states() == c.rng_states()

    # the training step keeps its buffers between calls (docs/speed.md, *What makes it fast*); evaluation frees them
    assert a.graph.function("train").maker.linker.allow_gc is False
    assert a.graph.function("evaluate").maker.linker.allow_gc is not False

    # no float64 in the compiled training step; int64 only for indices and shapes
    fgraph = a.graph.function("train").maker.fgraph
    dtypes = {getattr(v.type, "dtype", None) for v in fgraph.variables}
    assert "float64" not in dtypes and "float16" not in dtypes
    assert {"float32", "int64"} <= dtypes
    # Fused elementwise ops must not compute in float64 either; the one allowed use is
    # the accumulator of float32 sums (CAReduce acc_dtype, as Theano had), whose output is float32.
    from pytensor.scalar.basic import Composite
    from pytensor.tensor.elemwise import CAReduce

    for node in fgraph.apply_nodes:
        scalar_op = getattr(node.op, "scalar_op", None)
        if isinstance(scalar_op, Composite) and not isinstance(node.op, CAReduce):
            inner = {v.type.dtype for v in scalar_op.fgraph.variables}
            assert "float64" not in inner, f"float64 inside {node.op}"
        if isinstance(node.op, CAReduce):
            assert all(o.type.dtype != "float64" for o in node.outputs)


def _training_noise(model, rows):
    """The noise the next training step will draw: copies of its generators, drawn as the graph draws."""
    states = model.rng_states()
    noise = {}
    for spec in samplers.NOISE:
        key = samplers.noise_key(spec)
        generator = np.random.Generator(np.random.PCG64())
        generator.bit_generator.state = states[f"train/{key}"]
        shape = (rows[spec.source], model.dims[spec.width])
        if spec.distribution == "uniform":
            noise[key] = generator.random(shape, dtype=np.float32)
        else:
            noise[key] = generator.normal(0.0, 1.0, shape).astype(np.float32)
    return noise


@pytest.mark.slow
def test_the_training_step_decodes_each_unfeatured_pair_once_and_takes_the_plain_step(training_data):
    """The training step runs the decoder on the distinct unfeatured pairs of its batch; its terms and
    update are those of the plain graph (every row decoded) on the same batch and noise."""
    data, _ = training_data
    rng = np.random.RandomState(8)
    index = dict(
        labeled=rng.randint(0, 30, 8), unlabeled=rng.randint(0, 25, 8), unfeatured=np.array([3, 1, 3, 3, 0, 1, 3, 0])
    )
    a, b = small(seed=21), small(seed=21)
    a.set_training_data(**data)
    noise = _training_noise(a, {source: len(i) for source, i in index.items()})
    batch = {name: data[name][index[passes.BATCH_SOURCE[name]]] for name in passes.BATCH}

    fgraph = a.graph.function("train").maker.fgraph
    assert {"Unique", "GatherRows", "ScatterAddRows"} <= {type(n.op).__name__ for n in fgraph.apply_nodes}
    terms = a.train_step(index["labeled"], index["unlabeled"], index["unfeatured"], 0.01)
    plain = b.trace(batch, noise)
    for term, value in terms.items():
        assert value == pytest.approx(float(plain[term if term == "total" else f"terms/{term}"]), rel=1e-6), term
    b.step_with_noise(batch, noise, 0.01)
    for name, va, vb in zip(a.param_names, a.get_param_values(), b.get_param_values()):
        np.testing.assert_allclose(va, vb, rtol=0, atol=1e-6, err_msg=name)


def test_the_training_step_adds_no_pass_for_the_encoder_concatenation_or_the_decoder_output_bias(training_data):
    """The encoder's first layer reads x and y without concatenating them (no Join copies a batch of x),
    the Bernoulli ops add the decoder's output bias in their own pass (it is their bias input), and each
    Bernoulli log-likelihood is computed with its gradient in one pass."""
    from pytensor.tensor.basic import Join

    data, _ = training_data
    model = small(seed=3)
    model.set_training_data(**data)
    fgraph = model.graph.function("train").maker.fgraph
    batch_x = {
        node.outputs[0]
        for node in fgraph.apply_nodes
        if isinstance(node.op, fast_rows.GatherRows) and node.inputs[0].name in ("data/labeled_x", "data/unlabeled_x")
    }
    assert len(batch_x) == 2
    for node in fgraph.apply_nodes:
        if isinstance(node.op, Join):
            assert not batch_x & set(node.inputs), node
    bias_inputs = {}
    bias_position = {  # where each Bernoulli op takes the decoder's output bias
        fast_bernoulli._BernoulliLogLik: -1,
        fast_bernoulli.BernoulliSampleLogits: -1,
        fast_bernoulli.BernoulliSampleSquaredDistanceRows: 2,
    }
    for node in fgraph.apply_nodes:
        for op_type, position in bias_position.items():
            if isinstance(node.op, op_type):
                bias_inputs.setdefault(type(node.op).__name__, []).append(node.inputs[position].name)
    # the labeled and unlabeled bounds with their gradients (one pass each: the row weights
    # are constants) and the labeled y->x sample's distance (eq. 7, sampled and summed in one
    # pass); the unfeatured source's decoder output is gathered from its distinct pairs, bias
    # included, so its ops (its bound, and its sample, which the reverse bound reads) get none
    assert sorted(bias_inputs) == [
        "BernoulliLogLikRowsAndGrad", "BernoulliSampleLogits", "BernoulliSampleSquaredDistanceRows"
    ]
    assert bias_inputs["BernoulliLogLikRowsAndGrad"].count("decoder/mean/b") == 2
    assert len(bias_inputs["BernoulliLogLikRowsAndGrad"]) == 3
    assert bias_inputs["BernoulliSampleLogits"] == [None]
    assert bias_inputs["BernoulliSampleSquaredDistanceRows"] == ["decoder/mean/b"]


# ---------------------------------------------------------------------------
# 7. Real MNIST: a few steps lower the loss


@pytest.mark.slow
def test_a_few_steps_on_mnist_lower_the_loss(mnist_dir):
    from untapped.data import load_split

    split = load_split(mnist_dir, download=False)
    rng = np.random.RandomState(0)
    n = 500
    lab = rng.choice(len(split.labeled_x), n, replace=False)
    unl = rng.choice(len(split.unlabeled_x), n, replace=False)
    arrays = dict(
        labeled_x=split.labeled_x[lab],
        labeled_y=split.labeled_y[lab],
        unlabeled_x=split.unlabeled_x[unl],
        unfeatured_y=split.unfeatured_y,
        unfeatured_z=split.unfeatured_z,
    )
    model = SSDGM(seed=1234)  # full size
    model.set_training_data(**arrays)
    tiled = np.arange(n) % len(split.unfeatured_y)  # the original tiles the 10 (y, z) pairs to the batch size
    held = dict(arrays, unfeatured_y=split.unfeatured_y[tiled], unfeatured_z=split.unfeatured_z[tiled])

    def mean_eval():
        runs = [model.evaluate(**held) for _ in range(3)]
        assert all(np.isfinite(v) for r in runs for v in r.values())
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    before = mean_eval()
    steps = [model.train_step(np.arange(n), np.arange(n), tiled, learning_rate=0.01) for _ in range(10)]
    after = mean_eval()
    assert all(np.isfinite(s["total"]) for s in steps)
    assert after["total"] < 0.9 * before["total"], (before, after)
    assert steps[-1]["total"] < steps[0]["total"]
    print(f"\nMNIST total: {before['total']:.2f} -> {after['total']:.2f} after 10 steps")


# ---------------------------------------------------------------------------
# 8. API behaviour


def test_inference_api(model, params, batch):
    reset(model, params)
    x = batch["labeled_x"]
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(model.predict(x), proba.argmax(axis=1))
    np.testing.assert_allclose(proba, port.softmax(port.classifier_logits(params, x)), rtol=1e-5, atol=1e-7)

    z = model.encode(x, batch["labeled_y"])
    assert z.shape == (len(x), 2)
    assert np.all(z > model.z_low) and np.all(z < model.z_high)
    mean, _ = port.encoder_heads(params, x, batch["labeled_y"])
    np.testing.assert_allclose(z, port.flow(mean), rtol=1e-5, atol=1e-6)

    y, zz = batch["unfeatured_y"], batch["unfeatured_z"]
    mu = model.generate(y, zz)
    assert mu.shape == (10, 20) and mu.min() >= 0 and mu.max() <= 1
    np.testing.assert_allclose(mu, port.decoder_mean(params, y, zz), rtol=1e-5, atol=1e-7)
    binary = model.generate(y, zz, threshold=True)
    assert set(np.unique(binary)) <= {0.0, 1.0}
    assert np.array_equal(binary, (mu >= 0.5).astype(np.float32))
    # double pass (the original's Figure 2): decode, re-encode the thresholded image, decode again
    twice = model.generate(y, zz, threshold=True, double_pass=True)
    y2 = model.predict_proba(binary)
    assert np.array_equal(twice, model.generate(y2, model.encode(binary, y2), threshold=True))
    twice_mean = model.generate(y, zz, double_pass=True)
    assert twice_mean.min() >= 0 and twice_mean.max() <= 1 and not np.array_equal(twice_mean, mu)


def test_bad_inputs_raise_clear_errors(model, params, batch, noise):
    reset(model, params)
    bad = dict(batch, labeled_x=batch["labeled_x"][:, :19])
    with pytest.raises(ValueError, match=r"labeled_x must have shape \(rows, 20\)"):
        model.trace(bad, noise)
    with pytest.raises(ValueError, match="unfeatured_z must have shape"):
        model.evaluate(**dict(batch, unfeatured_z=batch["unfeatured_z"][:, :1]))
    with pytest.raises(ValueError, match="labeled arrays have different numbers of rows"):
        model.trace(dict(batch, labeled_y=batch["labeled_y"][:-1]), noise)
    with pytest.raises(ValueError, match="unfeatured arrays have different numbers of rows"):
        model.set_training_data(**dict(batch, unfeatured_z=batch["unfeatured_z"][:-1]))
    for bad in (np.nan, np.inf):
        poisoned = batch["unlabeled_x"].copy()
        poisoned[2, 3] = bad
        with pytest.raises(ValueError, match="^unlabeled_x contains NaN or infinity$"):
            model.set_training_data(**dict(batch, unlabeled_x=poisoned))
        with pytest.raises(ValueError, match="^unlabeled_x contains NaN or infinity$"):
            model.evaluate(**dict(batch, unlabeled_x=poisoned))
    with pytest.raises(ValueError, match="missing batch array 'unlabeled_x'"):
        model.trace({k: v for k, v in batch.items() if k != "unlabeled_x"}, noise)
    with pytest.raises(ValueError, match="missing noise array 'labeled/gaussian_eps'"):
        model.trace(batch, {k: v for k, v in noise.items() if k != "labeled/gaussian_eps"})
    with pytest.raises(ValueError, match="noise 'unlabeled/gumbel_uniform' has shape"):
        model.total_gradients(batch, dict(noise, **{"unlabeled/gumbel_uniform": noise["unlabeled/gumbel_uniform"][1:]}))
    values = model.get_param_values()
    with pytest.raises(ValueError, match="expected 20 parameter arrays, got 19"):
        model.set_param_values(values[:-1])
    with pytest.raises(ValueError, match=r"encoder/mean/W: shape \(2, 3\) does not match the model's \(3, 2\)"):
        model.set_param_values([v.T if n == "encoder/mean/W" else v for n, v in zip(model.param_names, values)])
    with pytest.raises(ValueError, match="missing parameters: decoder/mean/b"):
        model.set_param_values_by_name({n: v for n, v in zip(model.param_names[:-1], values)})
    with pytest.raises(ValueError, match="missing optimizer state"):
        model.set_optimizer_state({"adam/t": np.float32(0)})
    with pytest.raises(ValueError, match="missing generator state"):
        model.set_rng_states({})
    # nothing above changed the model
    for a, b in zip(model.get_param_values(), values):
        assert np.array_equal(a, b)
    # inference on wrong widths fails inside the compiled function, still as a ValueError
    with pytest.raises(ValueError):
        model.predict_proba(batch["labeled_x"][:, :19])
    with pytest.raises(ValueError):
        model.generate(batch["unfeatured_y"], batch["unfeatured_z"][:5])

    with pytest.raises(ValueError, match="unknown model 'm3'; choose one of untapped, m2"):
        SSDGM.from_preset("m3")
    with pytest.raises(ValueError, match="unknown reverse_elbo_variant 'eq5'; choose one of code, eq17"):
        _ = small(reverse_elbo_variant="eq5").graph
    with pytest.raises(ValueError, match="unknown compile mode 'gpu'"):
        _ = small(mode="gpu").graph
    assert SSDGM.from_preset("untapped", **SMALL).get_params() == SSDGM(**SMALL).get_params()


def test_sklearn_params_clone_and_rebuild():
    m = small()
    params = m.get_params()
    assert set(params) == set(SSDGM().get_params()) and params["n_features"] == 20 and params["seed"] == 7
    graph = m.graph
    assert graph.coefficients == port.UNTAPPED_COEFFICIENTS

    twin = clone(m)
    assert twin.get_params() == params and twin is not m
    assert "graph_" not in vars(twin)  # a clone is unbuilt

    assert m.set_params(coeff_reverse_elbo=0.0) is m
    assert "graph_" not in vars(m)
    rebuilt = m.graph
    assert rebuilt is not graph
    assert rebuilt.coefficients == port.M2_COEFFICIENTS
    assert rebuilt.train_outputs == ["labeled_elbo", "unlabeled_elbo", "x_to_y_loss", "y_to_x_loss", "total"]
    assert m.get_params() == SSDGM.m2(**SMALL, seed=7).get_params()
    m.set_params(encoder_hidden=(5, 3))
    assert m.param_values_by_name()["encoder/hidden1/W"].shape == (30, 5)
    with pytest.raises(ValueError):
        m.set_params(not_a_parameter=1)
    assert list(passes.BATCH) == list(port.BATCH)
    assert [samplers.noise_key(s) for s in samplers.NOISE] == [n for n, *_ in port.NOISE]


def test_every_default_is_the_one_presets_states():
    """The estimator's, the networks', a run's, the split's and a bundle's defaults: presets' values, the original's."""
    import inspect

    from untapped.data import load_split
    from untapped.experiment import RunSpec
    from untapped.paper.networks import Networks
    from untapped.reference.exporting import compute

    # The original's MNIST model and the paper's schedule, written out here as the test's own statement.
    sizes = dict(n_features=784, n_classes=10, n_latent=2, classifier_hidden=(50, 50), encoder_hidden=(10, 10),
                 decoder_hidden=(250, 500))
    schedule = dict(seed=1234, batch_size=10_000, epochs=150, eval_every=10)
    assert {k: getattr(presets, k.upper()) for k in sizes} == sizes
    assert (presets.DEFAULT_SEED, presets.BATCH_SIZE, presets.EPOCHS, presets.EVAL_EVERY) == tuple(schedule.values())
    assert dict(presets.CODE_COEFFICIENTS) == dict(
        labeled_elbo=0.1, unlabeled_elbo=0.1, reverse_elbo=0.1, x_to_y_loss=1.0, y_to_x_loss=0.01
    )
    params = SSDGM().get_params()
    assert {k: params[k] for k in {**sizes, **schedule}} == {**sizes, **schedule}
    assert SSDGM().coefficients == presets.CODE_COEFFICIENTS
    assert SSDGM.m2().coefficients == presets.PRESETS["m2"]
    networks = inspect.signature(Networks).parameters
    assert {k: networks[k].default for k in sizes} == sizes and networks["seed"].default == schedule["seed"]
    spec = RunSpec()
    assert (spec.seed, spec.batch_size, spec.epochs, spec.eval_every) == tuple(schedule.values())
    for function in (load_split, compute):
        assert inspect.signature(function).parameters["seed"].default == schedule["seed"]


# ---------------------------------------------------------------------------
# 8. The paper's unfeatured data: one-hot y scored by log Cat, a fresh z ~ p(z) per step


def test_categorical_reverse_bound_against_numpy():
    """reverse_elbo = mean_k [ log Bern(x^_k; clip(mean_k)) - sum_i y_ki log softmax(l(x^_k))_i ] (one-hot y)."""
    model = small(reverse_y_density="categorical")
    batch = make_batch(np.random.RandomState(3))
    batch["unfeatured_y"] = np.eye(10, dtype=np.float32)
    noise = port.draw_noise(batch, np.random.default_rng(4))
    trace = model.trace(batch, noise)
    x, mean = trace["unfeatured/x_sample"].astype(np.float64), trace["unfeatured/x_mean"].astype(np.float64)
    c = np.clip(mean, 1e-5, 1 - 1e-5)
    log_p_x = np.sum(x * np.log(c) + (1 - x) * np.log(1 - c), axis=1)
    logits = trace["unfeatured/logits"].astype(np.float64)
    log_softmax = logits - logits.max(axis=1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(axis=1, keepdims=True))
    expected = np.mean(log_p_x - np.sum(batch["unfeatured_y"] * log_softmax, axis=1))
    assert float(trace["terms/reverse_elbo"]) == pytest.approx(expected, rel=1e-5)
    # The Concrete log density of a one-hot y is not finite: nor is the original's term there.
    concrete = small().trace(batch, noise)
    assert not np.isfinite(float(concrete["terms/reverse_elbo"]))


def test_reverse_bound_rejects_an_unknown_y_density():
    m = pytensor.tensor.matrix
    unfeatured = passes.UnfeaturedPass(logits=m(), y_probs=m(), x_mean=m(), x_sample=m())
    with pytest.raises(ValueError, match="unknown reverse_y_density 'one-hot'; choose one of concrete, categorical"):
        terms.reverse_elbo(m(), unfeatured, y_density="one-hot")


def _one_step(model, unfeatured_z):
    data = make_batch(np.random.RandomState(5))
    data["unfeatured_z"] = unfeatured_z
    model.set_training_data(**data)
    model.train_step(np.arange(8) % 12, np.arange(8) % 9, np.arange(8) % 10, 0.01)
    return model.param_values_by_name()


@pytest.mark.parametrize("source", ["fixed", "prior"])
def test_prior_z_replaces_the_data_z_in_training(source):
    z_a = np.zeros((10, 2), np.float32)
    z_b = np.full((10, 2), 1.2, np.float32)
    first, second = _one_step(small(unfeatured_z=source), z_a), _one_step(small(unfeatured_z=source), z_b)
    decoder_same = all(np.array_equal(first[k], second[k]) for k in first if k.startswith("decoder/"))
    # With z ~ p(z) drawn in the step, the split's z are never read; with the code's fixed z they are.
    assert decoder_same == (source == "prior")


def test_prior_z_is_a_seeded_stream_of_its_own():
    model = small(unfeatured_z="prior")
    model.set_training_data(**make_batch(np.random.RandomState(5)))
    states = model.rng_states()
    assert "train/unfeatured/prior_z" in states
    before = {k: copy.deepcopy(v) for k, v in states.items()}
    model.train_step(np.arange(8) % 12, np.arange(8) % 9, np.arange(8) % 10, 0.01)
    after = model.rng_states()
    assert after["train/unfeatured/prior_z"] != before["train/unfeatured/prior_z"]
    # The code's model has no such stream, so its other streams and checkpoints are unchanged.
    assert "train/unfeatured/prior_z" not in small().rng_states()
    with pytest.raises(ValueError, match="unfeatured_z"):
        _ = small(unfeatured_z="sometimes").graph
