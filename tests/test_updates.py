"""Adam as Lasagne's master computes it (untapped.updates.adam), against NumPy float32."""

import numpy as np
import pytensor
import pytensor.tensor as pt

from untapped.backend import float32
from untapped.updates import adam

BETA1, BETA2, EPS, LR = 0.9, 0.999, 1e-4, 0.01


def _numpy_master_step(theta, m, v, t, g):
    """One step in float32 arithmetic with master's float32 ``1 - beta`` (reference_format.md §7.6)."""
    f = np.float32
    one_minus_b1 = f(1) - f(BETA1)
    one_minus_b2 = f(1) - f(BETA2)
    t = t + f(1)
    a_t = f(LR) * np.sqrt(f(1) - f(BETA2) ** t) / (f(1) - f(BETA1) ** t)
    m = f(BETA1) * m + one_minus_b1 * g
    v = f(BETA2) * v + one_minus_b2 * g * g
    theta = theta - a_t * m / (np.sqrt(v) + f(EPS))
    return theta, m, v, t


def _compiled_steps(theta0, grads):
    with float32():
        param = pytensor.shared(theta0.copy(), name="theta")
        g = pt.vector("g")
        updates = adam([g], [param], learning_rate=pt.constant(np.float32(LR)), beta1=BETA1, beta2=BETA2, epsilon=EPS)
        m_var, v_var, _, t_var = list(updates)
        step = pytensor.function([g], [], updates=updates)
    out = []
    for grad in grads:
        step(grad)
        out.append((param.get_value(), m_var.get_value(), v_var.get_value(), t_var.get_value()))
    return out


def test_master_constants_are_the_float32_subtractions():
    assert np.float32(1) - np.float32(BETA1) == np.float32(0.100000024)
    assert np.float32(1) - np.float32(BETA2) == np.float32(0.0009999871)
    # ... which are not the float64 differences rounded (PyPI Lasagne 0.1's constants).
    assert np.float32(1 - BETA1) != np.float32(1) - np.float32(BETA1)
    assert np.float32(1 - BETA2) != np.float32(1) - np.float32(BETA2)


def test_each_step_matches_numpy_float32_with_master_constants():
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(257).astype(np.float32)
    grads = [rng.uniform(-1, 1, 257).astype(np.float32) for _ in range(3)]
    ours = _compiled_steps(theta0, grads)
    ulp = np.finfo(np.float32).eps
    previous = (theta0, np.zeros_like(theta0), np.zeros_like(theta0), np.float32(0))
    for (our_theta, our_m, our_v, our_t), g in zip(ours, grads):
        # Each step from our own previous state, so rounding cannot compound.
        theta_prev, m_prev, v_prev, t_prev = previous
        theta, m, v, t = _numpy_master_step(theta_prev, m_prev, v_prev, t_prev, g)
        assert our_t == t
        # A sum of two float32 products (possibly one fused multiply-add) is
        # within two ulps of the larger operand's magnitude.
        m_scale = np.abs(np.float32(BETA1) * m_prev) + np.abs((np.float32(1) - np.float32(BETA1)) * g)
        assert np.all(np.abs(our_m - m) <= 2 * ulp * m_scale)
        np.testing.assert_allclose(our_v, v, rtol=4 * ulp, atol=0)
        step = np.abs(theta_prev - theta)
        assert np.all(np.abs(our_theta - theta) <= 4 * ulp * (np.abs(theta_prev) + step))
        previous = (our_theta, our_m, our_v, our_t)
    # PyPI Lasagne 0.1's constant moves the first v by 1.3e-5 relative, far outside these bounds.
    v_pypi = np.float32(1 - BETA2) * grads[0] * grads[0]
    assert np.max(np.abs(ours[0][2] - v_pypi) / v_pypi) > 1e-5
