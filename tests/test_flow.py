"""The logistic flow of ``parmesan_compat.layers.flow`` against independent computations.

The forward map and the default log-det are compared with NumPy float64; the exact
log-det with the log |det| of a central-difference Jacobian of the PyTensor forward
map itself, compiled in float64 (graphs built outside ``float32()`` on float64
inputs); and the paper's eqs. 14-16 are checked to be a typo against that same
finite-difference Jacobian.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy import special

from parmesan_compat.backend import load_lasagne
from parmesan_compat.layers.flow import (
    LogisticFlowLayer,
    logistic_flow,
    logistic_flow_inverse,
    logistic_flow_log_det,
)
from untapped.backend import compile_mode, float32

lasagne = load_lasagne()

LOW, HIGH = -np.pi / 2, np.pi / 2
PAPER_LOW, PAPER_HIGH = -1.5, 1.5
FD_STEP = 1e-3  # central differences of a logistic: truncation ~h^2/6, rounding ~2e-16/h relative to |f| ~ 1.6
LOG_FLOOR = np.log(1e-5)


def f32(a):
    return np.asarray(a, dtype=np.float32)


@pytest.fixture(scope="module")
def flow32():
    """float32 graphs, C mode: flow, inverse and both log-dets, for both boxes."""
    with float32():
        z_tilde = pt.matrix("z_tilde")
        z = pt.matrix("z")
        outs = [
            logistic_flow(z_tilde),
            logistic_flow(z_tilde, PAPER_LOW, PAPER_HIGH),
            logistic_flow_inverse(z),
            logistic_flow_inverse(z, PAPER_LOW, PAPER_HIGH),
            logistic_flow_log_det(z_tilde),
            logistic_flow_log_det(z_tilde, exact=True),
            logistic_flow_log_det(z_tilde, PAPER_LOW, PAPER_HIGH),
        ]
        assert all(o.dtype == "float32" for o in outs), [o.dtype for o in outs]
        fn = pytensor.function([z_tilde, z], outs, mode=compile_mode("c"))
    assert not [v for v in fn.maker.fgraph.variables if getattr(v.type, "dtype", None) == "float64"]
    keys = ("flow", "flow_paper", "inverse", "inverse_paper", "log_det", "log_det_exact", "log_det_paper")

    def run(z_tilde_value, z_value=None):
        z_value = z_tilde_value if z_value is None else z_value
        values = fn(f32(z_tilde_value), f32(z_value))
        assert all(v.dtype == np.float32 for v in values)
        return dict(zip(keys, values))

    return run


@pytest.fixture(scope="module")
def flow64():
    """float64 graphs (built outside float32()): forward map and both log-dets, for both boxes."""
    z_tilde = pt.matrix("z_tilde", dtype="float64")
    outs = [
        logistic_flow(z_tilde),
        logistic_flow_log_det(z_tilde, exact=True),
        logistic_flow_log_det(z_tilde),
        logistic_flow(z_tilde, PAPER_LOW, PAPER_HIGH),
        logistic_flow_log_det(z_tilde, PAPER_LOW, PAPER_HIGH, exact=True),
    ]
    assert all(o.dtype == "float64" for o in outs)
    fn = pytensor.function([z_tilde], outs, mode=compile_mode("c"))
    keys = ("flow", "log_det_exact", "log_det", "flow_paper", "log_det_exact_paper")
    return lambda value: dict(zip(keys, fn(np.asarray(value, dtype=np.float64))))


def fd_jacobian(flow64, z_tilde, key):
    """Central-difference Jacobian (B, d, d) of the compiled float64 map, one call for all rows."""
    b, d = z_tilde.shape
    shifts = FD_STEP * np.eye(d)
    stacked = np.concatenate([z_tilde[:, None, :] + shifts, z_tilde[:, None, :] - shifts], axis=1)
    images = flow64(stacked.reshape(-1, d))[key].reshape(b, 2 * d, d)
    # column j = (f(z + h e_j) - f(z - h e_j)) / 2h; J[b, i, j] = d f_i / d z_j
    return np.transpose((images[:, :d] - images[:, d:]) / (2 * FD_STEP), (0, 2, 1))


def test_z_tildes(d):
    rng = np.random.default_rng(10 + d)
    rows = [rng.normal(0, 4, size=(40, d)), rng.uniform(-3, 3, size=(20, d))]
    big = np.full((4, d), 0.3)
    big[:, 0] = [12.0, -12.0, 20.0, -20.0]  # large |z~|: Jacobian entries down to ~6e-9
    rows.append(big)
    z = np.concatenate(rows)
    return np.clip(z, -20, 20)


test_z_tildes.__test__ = False  # a helper, not a test


def test_flow_maps_into_the_box_and_matches_numpy(flow32):
    rng = np.random.default_rng(0)
    z_tilde = f32(rng.normal(0, 5, size=(200, 3)))
    out = flow32(z_tilde)
    s = special.expit(z_tilde.astype(np.float64))
    np.testing.assert_allclose(out["flow"], LOW + (HIGH - LOW) * s, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["flow_paper"], PAPER_LOW + (PAPER_HIGH - PAPER_LOW) * s, rtol=1e-6, atol=1e-6)
    # strictly inside while float32 can resolve sigmoid(z~) from 0 and 1 ...
    moderate = np.abs(z_tilde) < 15
    assert np.all(out["flow"][moderate] > f32(LOW)) and np.all(out["flow"][moderate] < f32(HIGH))
    assert np.all(out["flow_paper"][moderate] > PAPER_LOW) and np.all(out["flow_paper"][moderate] < PAPER_HIGH)
    # ... and never outside, even where it saturates
    extreme = flow32(f32([[-1e4, -100.0, -40.0], [40.0, 100.0, 1e4]]))
    assert np.all(extreme["flow"] >= f32(LOW)) and np.all(extreme["flow"] <= f32(HIGH))
    np.testing.assert_allclose(extreme["flow"], [[LOW] * 3, [HIGH] * 3], atol=1e-6)
    assert np.all(np.isfinite(extreme["log_det"])) and np.all(np.isfinite(extreme["log_det_exact"]))


def test_inverse_inverts_the_flow_away_from_the_clip(flow32):
    z_tilde = f32(np.linspace(-6, 6, 121).reshape(-1, 1) * np.ones((1, 2)))
    out = flow32(z_tilde)
    back = flow32(z_tilde, out["flow"])["inverse"]
    back_paper = flow32(z_tilde, out["flow_paper"])["inverse_paper"]
    # float32: z = a + (b-a) s loses ~1e-7 absolute, amplified by 1/(s(1-s)) <= 410 at |z~| = 6
    np.testing.assert_allclose(back, z_tilde, atol=1e-4 * 410)
    np.testing.assert_allclose(back_paper, z_tilde, atol=1e-4 * 410)
    central = np.abs(z_tilde[:, 0]) <= 2
    np.testing.assert_allclose(back[central], z_tilde[central], atol=2e-5 * 10)
    # at and beyond the box the clip of u to [1e-5, 1 - 1e-5] bounds the inverse at +-logit(1 - 1e-5)
    edge = f32([[LOW, HIGH], [-10.0, 10.0]])
    clipped = flow32(edge, edge)["inverse"]
    bound = special.logit(1 - 1e-5)
    np.testing.assert_allclose(clipped, [[-bound, bound], [-bound, bound]], rtol=2e-3)
    assert np.all(np.isfinite(clipped))


@pytest.mark.parametrize("d", [2, 3])
def test_exact_log_det_is_log_abs_det_of_finite_difference_jacobian(flow64, d):
    z_tilde = test_z_tildes(d)
    jac = fd_jacobian(flow64, z_tilde, "flow")
    sign, log_abs_det = np.linalg.slogdet(jac)
    assert np.all(sign > 0)
    # the flow is elementwise: the finite-difference Jacobian is diagonal
    off_diagonal = jac * (1 - np.eye(d))
    assert np.max(np.abs(off_diagonal)) == 0.0
    got = flow64(z_tilde)
    np.testing.assert_allclose(got["log_det_exact"], log_abs_det, rtol=0, atol=1e-4)
    jac_paper = fd_jacobian(flow64, z_tilde, "flow_paper")
    np.testing.assert_allclose(got["log_det_exact_paper"], np.linalg.slogdet(jac_paper)[1], rtol=0, atol=1e-4)
    # much tighter where the Jacobian is not tiny (rounding error of the differences ~1e-13)
    moderate = np.all(np.abs(z_tilde) < 6, axis=1)
    np.testing.assert_allclose(got["log_det_exact"][moderate], log_abs_det[moderate], rtol=0, atol=1e-6)


@pytest.mark.parametrize("d", [2, 3])
def test_default_log_det_is_the_originals_guarded_product(flow32, flow64, d):
    z_tilde = test_z_tildes(d)
    s = special.expit(z_tilde)
    product = np.prod((HIGH - LOW) * s * special.expit(-z_tilde), axis=1)  # 1 - s without cancellation
    reference = np.log(1e-5 + product)
    # float64 graph: agreement with NumPy float64 (1 - s cancels in the graph: ~2e-16 e^|z~| relative)
    np.testing.assert_allclose(flow64(z_tilde)["log_det"], reference, rtol=0, atol=1e-9)
    # float32 graph (the one the model runs): 1 - sigmoid(z~) in float32 has a relative error
    # ~6e-8 e^|z~| for large positive z~, which is what the tolerance allows for
    out = flow32(z_tilde)
    tol = 2e-6 + 1.2e-7 * np.exp(np.abs(z_tilde)).sum(axis=1) * product / (product + 1e-5)
    assert np.all(np.abs(out["log_det"] - reference) <= tol), np.max(np.abs(out["log_det"] - reference) / tol)
    # bounded below by log(1e-5), attained when the product underflows
    assert np.all(out["log_det"] >= np.float32(LOG_FLOOR) - 1e-6)
    saturated = flow32(f32([[30.0] * d, [-30.0] * d, [100.0] + [0.0] * (d - 1)]))
    np.testing.assert_allclose(saturated["log_det"], LOG_FLOOR, atol=1e-6)
    assert np.all(saturated["log_det_exact"] < LOG_FLOOR - 10)  # the exact value is not bounded
    # the paper's box
    s_paper = (HIGH - LOW) / (PAPER_HIGH - PAPER_LOW)
    product_paper = product / s_paper**d
    tol_paper = 2e-6 + 1.2e-7 * np.exp(np.abs(z_tilde)).sum(axis=1) * product_paper / (product_paper + 1e-5)
    assert np.all(np.abs(out["log_det_paper"] - np.log(1e-5 + product_paper)) <= tol_paper)


@pytest.mark.parametrize("d", [2, 3])
def test_exact_and_default_log_det_agree_when_the_product_is_large(flow32, flow64, d):
    z_tilde = test_z_tildes(d)
    s = special.expit(z_tilde)
    product = np.prod((HIGH - LOW) * s * special.expit(-z_tilde), axis=1)  # 1 - s without cancellation
    large = product > 1e-2
    assert large.sum() > 10
    got64 = flow64(z_tilde)
    # log(1e-5 + P) - log P = log1p(1e-5 / P) <= 1e-3 there
    np.testing.assert_allclose(
        got64["log_det"][large] - got64["log_det_exact"][large], np.log1p(1e-5 / product[large]), atol=1e-12
    )
    got32 = flow32(z_tilde)
    assert np.all(np.abs(got32["log_det"][large] - got32["log_det_exact"][large]) < 1e-3 + 1e-5)
    assert np.all(got64["log_det"] >= got64["log_det_exact"])
    # where the product is tiny they differ by a lot: the guard is not negligible there
    assert np.any(got64["log_det"] - got64["log_det_exact"] > 5)


def test_paper_eq14_is_a_typo(flow64):
    """Eq. 14's sigma(1 - z^) sigma(z^) is not the Jacobian; z^ (1 - z^) is (z^ from eq. 12)."""
    z_tilde = test_z_tildes(2)
    jac = fd_jacobian(flow64, z_tilde, "flow")
    diagonal = np.diagonal(jac, axis1=1, axis2=2) / (HIGH - LOW)
    z_hat = (flow64(z_tilde)["flow"] - LOW) / (HIGH - LOW)
    corrected = z_hat * (1 - z_hat)
    np.testing.assert_allclose(diagonal, corrected, rtol=1e-4, atol=0)
    literal = special.expit(1 - z_hat) * special.expit(z_hat)
    # sigma(1 - t) sigma(t) >= sigma(0) sigma(1) = 0.366 > 0.25 >= t (1 - t) on [0, 1]
    assert np.all(literal / diagonal > 1.4)
    # and so eq. 16 taken literally misses the finite-difference log |det| by >= 2 log 1.4 per row
    log_det_literal = 2 * np.log(HIGH - LOW) + np.sum(np.log(literal), axis=1)
    assert np.all(log_det_literal - np.linalg.slogdet(jac)[1] > 2 * np.log(1.4))


def test_logistic_flow_layer(flow64):
    L = lasagne.layers
    with pytest.raises(ValueError, match="low < high"):
        LogisticFlowLayer(L.InputLayer((None, 2)), low=1.0, high=1.0)
    with pytest.raises(ValueError, match="low < high"):
        LogisticFlowLayer(L.InputLayer((None, 2)), low=1.5, high=-1.5)

    l_in = L.InputLayer((None, 2), name="z_tilde")
    layers = [
        LogisticFlowLayer(l_in),
        LogisticFlowLayer(l_in, exact=True),
        LogisticFlowLayer(l_in, low=PAPER_LOW, high=PAPER_HIGH),
    ]
    assert (layers[0].low, layers[0].high) == (LOW, HIGH)
    assert all(layer.output_shape == (None, 2) for layer in layers)
    assert not any(layer.get_params() for layer in layers)
    with float32():
        z_tilde = pt.matrix("z_tilde")
        outs, refs = [], []
        for layer, (low, high, exact) in zip(
            layers, [(LOW, HIGH, False), (LOW, HIGH, True), (PAPER_LOW, PAPER_HIGH, False)]
        ):
            z = lasagne.layers.get_output(layer, inputs={l_in: z_tilde})
            outs += [z, layer.log_det_jacobian(z_tilde), layer.inverse(z)]
            refs += [
                logistic_flow(z_tilde, low, high),
                logistic_flow_log_det(z_tilde, low, high, exact=exact),
                logistic_flow_inverse(logistic_flow(z_tilde, low, high), low, high),
            ]
        assert all(o.dtype == "float32" for o in outs)
        fn = pytensor.function([z_tilde], outs + refs, mode=compile_mode("c"))
    value = f32(test_z_tildes(2))
    results = fn(value)
    got, ref = results[: len(outs)], results[len(outs) :]
    for a, b in zip(got, ref):
        assert a.dtype == np.float32 and a.shape[0] == len(value)
        np.testing.assert_array_equal(a, b)
    # and against float64 / NumPy independently of the function it wraps
    z64 = flow64(value.astype(np.float64))
    np.testing.assert_allclose(got[0], z64["flow"], atol=2e-6)
    np.testing.assert_allclose(got[4], z64["log_det_exact"], atol=1e-4)
