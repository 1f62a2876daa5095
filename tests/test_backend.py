import os
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from untapped.backend import compile_mode, float32


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_no_theano_alias_leaks_after_import():
    result = run_python(
        "import sys, untapped\n"
        "assert not [m for m in sys.modules if m == 'theano' or m.startswith('theano.')], sys.modules\n"
        "try:\n"
        "    import theano\n"
        "except ImportError:\n"
        "    print('no theano')\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no theano"


def test_import_leaves_global_floatx_alone():
    result = run_python("import pytensor, untapped; print(pytensor.config.floatX)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "float64"


def test_lasagne_dense_path_is_float32_on_pytensor():
    import pytensor
    from parmesan_compat.backend import lasagne_rng, load_lasagne
    from untapped.backend import compile_mode, float32

    lasagne = load_lasagne()

    L = lasagne.layers
    a = L.InputLayer((None, 3), name="a")
    b = L.InputLayer((None, 2), name="b")
    # Seeded: with some draws every output is rectified to 0, the gradient
    # vanishes and Adam leaves W alone (this test once failed that way).
    with lasagne_rng(np.random.RandomState(1)):
        dense = L.DenseLayer(L.ConcatLayer([a, b]), 4, W=lasagne.init.GlorotUniform(np.sqrt(2)))
    assert dense.W.get_value().dtype == np.float32
    with float32():
        xa = pytensor.tensor.matrix("xa")
        xb = pytensor.tensor.matrix("xb")
        out = L.get_output(dense, inputs={a: xa, b: xb})
        loss = (out**2).mean()
        params = L.get_all_params(dense, trainable=True)
        grads = lasagne.updates.total_norm_constraint(pytensor.grad(loss, params), max_norm=5.0)
        updates = lasagne.updates.adam(grads, params, learning_rate=0.01)
        f = pytensor.function([xa, xb], [out, loss], updates=updates, mode=compile_mode("c"))
    rng = np.random.RandomState(0)
    va, vb = rng.rand(5, 3).astype("float32"), rng.rand(5, 2).astype("float32")
    W0 = dense.W.get_value().copy()
    out_value, _ = f(va, vb)
    expected = np.maximum(np.hstack([va, vb]) @ W0, 0)  # Lasagne default: rectify, b = 0
    assert out_value.dtype == np.float32
    np.testing.assert_allclose(out_value, expected, rtol=1e-5, atol=1e-6)
    assert (expected > 0).any()  # a gradient to step on
    assert not np.array_equal(dense.W.get_value(), W0)
    assert all(u.dtype == "float32" for u in updates.values())


def test_get_output_replaces_an_intermediate_layer():
    import pytensor
    from parmesan_compat.backend import load_lasagne
    from untapped.backend import float32

    lasagne = load_lasagne()

    L = lasagne.layers
    x = L.InputLayer((None, 3))
    hidden = L.DenseLayer(x, 2, nonlinearity=None, name="hidden")
    top = L.DenseLayer(hidden, 1, nonlinearity=None, b=lasagne.init.Constant(0.0))
    with float32():
        h = pytensor.tensor.matrix("h")
        out = L.get_output(top, inputs={hidden: h})
        f = pytensor.function([h], out)
    value = np.ones((4, 2), dtype="float32")
    np.testing.assert_allclose(f(value), value @ top.W.get_value(), rtol=1e-6)


def test_convolution_raises_clear_not_implemented():
    from parmesan_compat.backend import load_lasagne

    lasagne = load_lasagne()

    L = lasagne.layers
    conv = L.Conv2DLayer(L.InputLayer((None, 1, 5, 5)), num_filters=2, filter_size=3)
    with pytest.raises(NotImplementedError, match="dense-network path"):
        L.get_output(conv)


def test_unknown_mode_is_a_clear_error():
    from untapped.backend import compile_mode

    with pytest.raises(ValueError, match="unknown compile mode"):
        compile_mode("gpu")


def test_environment_records_mode_and_blas_flags():
    from untapped.backend import environment

    env = environment("c")
    assert env["linker"] == "cvm" and "blas__ldflags" in env
    assert env["versions"]["pytensor"].startswith("3.0")


def test_softmax_is_inlined_into_c_loops():
    """The C mode replaces PyTensor 3's Python-run Softmax / LogSoftmax by their max-exp-sum graphs (Numba compiles them itself)."""
    from pytensor.tensor.special import LogSoftmax, Softmax, log_softmax, softmax

    with float32():
        x = pt.matrix("x")
        y, ly = softmax(x, axis=-1), log_softmax(x, axis=-1)
        gx = pytensor.grad((y * pt.arange(3)).sum() + ly[:, 0].sum(), x)
        f = pytensor.function([x], [y, ly, gx], mode=compile_mode("c"))
    assert not [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, (Softmax, LogSoftmax))]
    v = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32) * 5
    s = np.exp(v - v.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    out, log_out, grad = f(v)
    np.testing.assert_allclose(out, s, rtol=1e-6)
    np.testing.assert_allclose(log_out, np.log(s), rtol=1e-5, atol=1e-6)
    w = np.arange(3.0)
    expected = s * (w - (s * w).sum(1, keepdims=True))  # d/dx of sum(softmax * w)
    expected += np.eye(3)[0] - s  # d/dx of log_softmax[:, 0]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_configure_threads_sets_the_hand_off_defaults_but_keeps_the_users():
    """configure_threads() defaults OMP_WAIT_POLICY / OPENBLAS_THREAD_TIMEOUT (docs/speed.md, *What makes it fast*); a user's values win; import alone sets nothing."""
    code = (
        "import os, untapped; before = [os.environ.get(k) for k in untapped.threads.THREAD_ENVIRONMENT]; "
        "print(untapped.configure_threads(), before, os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "[None,", "None]", "PASSIVE", "4"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["True", "['ACTIVE',", "None]", "ACTIVE", "4"]
    late = subprocess.run([sys.executable, "-c", "import numpy, untapped; print(untapped.configure_threads())"], capture_output=True, text=True, env=env)
    assert late.stdout.split() == ["False"]