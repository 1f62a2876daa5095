import os
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from untapped.backend import compile_mode, float32
from untapped.fast import compat


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
    assert env["versions"]["pytensor"] == pytensor.__version__
    assert compat.in_tested_range(env["versions"]["pytensor"])


def test_softmax_is_inlined_into_c_loops():
    """The C mode replaces PyTensor 3's Python-run Softmax / LogSoftmax by their max-exp-sum graphs (Numba
    compiles them itself)."""
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
    """configure_threads() defaults OMP_WAIT_POLICY / OPENBLAS_THREAD_TIMEOUT (docs/speed.md, *What makes it
    fast*); a user's values win; import alone sets nothing."""
    code = (
        "import os, untapped; before = [os.environ.get(k) for k in untapped.threads.THREAD_ENVIRONMENT]; "
        "print(untapped.configure_threads(), before, "
        "os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "[None,", "None]", "PASSIVE", "4"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["True", "['ACTIVE',", "None]", "ACTIVE", "4"]
    late = subprocess.run(
        [sys.executable, "-c", "import numpy, untapped; print(untapped.configure_threads())"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert late.stdout.split() == ["False"]

@pytest.mark.parametrize(
    "version, tested",
    [
        ("3.0.6", False), ("3.0.7", True), ("3.1.0", True), ("3.3.8", True),
        ("3.4.0rc1", False), ("3.4.0", False), ("3.10.0", False), ("4.0", False),
    ],
)  # fmt: skip
def test_the_tested_range_is_pytensor_3_0_7_up_to_3_4(version, tested):
    assert compat.in_tested_range(version) is tested
    message = compat.untested_message(version)
    assert (message is None) is tested
    if not tested:
        assert version in message and ">=3.0.7,<3.4" in message and "\n" not in message


def test_inside_the_range_the_c_mode_is_used_unchecked(monkeypatch):
    from untapped import backend

    def fail():
        raise AssertionError("the self-check ran inside the tested range")

    backend.speed_layer_failure.cache_clear()
    monkeypatch.setattr(backend, "_speed_layer_mismatch", fail)
    try:
        assert backend.resolve_mode("c") == "c"
        assert [backend.resolve_mode(m) for m in ("plain", "numba")] == ["plain", "numba"]
    finally:
        backend.speed_layer_failure.cache_clear()


@pytest.fixture
def untested_pytensor(monkeypatch, caplog):
    """The imported PyTensor, as a version outside the tested range sees it; the log lines it gets."""
    from untapped import backend

    monkeypatch.setattr(pytensor, "__version__", "3.4.0")
    backend.speed_layer_failure.cache_clear()
    caplog.set_level("WARNING", logger="untapped")
    yield caplog
    backend.speed_layer_failure.cache_clear()


def test_outside_the_range_a_working_c_mode_is_kept_with_one_line(untested_pytensor):
    from untapped import backend

    assert backend.resolve_mode("c") == "c"
    assert backend.resolve_mode("c") == "c"  # checked and said once a process
    (line,) = [r.getMessage() for r in untested_pytensor.records]
    assert line.startswith("PyTensor 3.4.0 is outside the range untapped is tested on (pytensor>=3.0.7,<3.4)")
    assert "C mode passed a self-check" in line and "\n" not in line


def test_outside_the_range_a_broken_speed_layer_falls_back_to_the_plain_mode(untested_pytensor, monkeypatch):
    """As on PyTensor 3.3 before the compat module: the speed layer failed at import (a removed op)."""
    import sys

    from untapped import backend
    from untapped.model import SSDGM

    monkeypatch.setitem(sys.modules, "untapped.fast.kernels", None)  # importing it now fails
    assert backend.resolve_mode("c") == "plain"
    (line,) = [r.getMessage() for r in untested_pytensor.records]
    assert line.startswith("PyTensor 3.4.0 is outside the range untapped is tested on (pytensor>=3.0.7,<3.4)")
    assert (
        "ModuleNotFoundError: import of untapped.fast.kernels halted" in line
        and line.endswith("so the plain mode is used")
        and "\n" not in line
    )
    assert backend.environment("c")["mode"] == "plain"
    assert backend.environment("c")["pytensor_tested"] == {"in_range": False, "range": ">=3.0.7,<3.4"}
    # A model asked for the C mode trains, in the plain mode.
    model = SSDGM.from_preset(
        "m2", n_features=6, classifier_hidden=(4,), encoder_hidden=(3,), decoder_hidden=(5,), seed=1
    )
    rng = np.random.RandomState(0)
    model.set_training_data(
        labeled_x=(rng.rand(4, 6) > 0.5).astype("float32"),
        labeled_y=np.eye(10, dtype="float32")[[0, 1, 2, 3]],
        unlabeled_x=(rng.rand(4, 6) > 0.5).astype("float32"),
        unfeatured_y=np.eye(10, dtype="float32"),
        unfeatured_z=rng.uniform(-1.5, 1.5, (10, 2)).astype("float32"),
    )
    terms = model.train_step(np.arange(4), np.arange(4), np.arange(4), 0.01)
    assert model.mode == "c" and model.graph.mode_name == "plain"
    assert all(np.isfinite(v) for v in terms.values())
    model.free_graph()  # not pooled: no other test gets this plain graph for the C mode


def test_outside_the_range_a_c_mode_that_computes_otherwise_falls_back(untested_pytensor, monkeypatch):
    from untapped import backend
    from untapped.fast.kernels import FastKernels

    # A speed layer that compiles but draws zeros for its uniforms: every sample is 1.
    monkeypatch.setattr(FastKernels, "uniform", staticmethod(lambda rng, size: (rng, pt.zeros(size, dtype="float32"))))
    assert backend.resolve_mode("c") == "plain"
    (line,) = [r.getMessage() for r in untested_pytensor.records]
    assert "its C mode fails (a sample differs from the plain mode's), so the plain mode is used" in line


def test_deprecations_in_untapped_code_fail_the_tests():
    """tests/conftest.py turns the deprecations untapped's own code triggers into errors; other packages' stay
    warnings."""
    import warnings

    for category in (DeprecationWarning, FutureWarning):
        for module in ("untapped.fast.rows", "parmesan_compat.backend", "untapped"):
            with pytest.raises(category):
                warnings.warn_explicit("a deprecated call", category, "x.py", 1, module=module)
    with warnings.catch_warnings(record=True):
        warnings.warn_explicit("a deprecated call", DeprecationWarning, "x.py", 1, module="lasagne.layers")
        warnings.warn_explicit("a deprecated call", DeprecationWarning, "x.py", 1, module="untapped_elsewhere")


def test_importing_untapped_triggers_no_deprecation():
    """Every module of untapped and parmesan_compat imports without a deprecation raised in its own code
    (the custom ops' ``infer_shape`` signature is checked when their classes are made)."""
    result = run_python(
        "import importlib, pkgutil, warnings\n"
        "for package in ('untapped', 'parmesan_compat'):\n"
        "    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):\n"
        "        warnings.filterwarnings('error', category=category, module=package + r'(\\.|$)')\n"
        "import untapped, parmesan_compat\n"
        "names = []\n"
        "for package in (untapped, parmesan_compat):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        "        names.append(info.name)\n"
        "print(len(names), 'untapped.fast.rows' in names, 'untapped.fast.compat' in names)\n"
    )
    assert result.returncode == 0, result.stderr
    count, rows, compat_module = result.stdout.split()
    assert int(count) > 40 and rows == compat_module == "True"
