"""The two layers stay apart: the paper layer never reaches the speed layer, imports change nothing
global, and the ``plain`` mode compiles the model from stock PyTensor ops only."""

import json
import subprocess
import sys

import numpy as np
import pytest
from pytensor.scalar.basic import Composite
from pytensor.tensor.elemwise import Elemwise

from test_modes import SMALL, small_data
from untapped.model import SSDGM

PAPER_MODULES = ["densities", "flow", "samplers", "kernels", "networks", "passes", "terms"]


def run_python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_paper_layer_imports_nothing_of_the_speed_layer():
    imports = "; ".join(f"import untapped.paper.{m}" for m in PAPER_MODULES)
    out = run_python(f"import sys; {imports}; print(sorted(m for m in sys.modules if m.startswith('untapped')))")
    loaded = eval(out)
    assert "untapped.paper.terms" in loaded
    assert not [
        m
        for m in loaded
        if m.startswith("untapped.fast") or m in ("untapped.backend", "untapped.graph", "untapped.model")
    ]


def test_parmesan_compat_imports_without_untapped():
    out = run_python(
        "import sys, parmesan_compat, parmesan_compat.distributions, parmesan_compat.layers; "
        "print(sorted(m for m in sys.modules if m.startswith('untapped')), 'lasagne' in sys.modules)"
    )
    assert out.split() == ["[]", "True"]


def test_import_untapped_changes_nothing_global():
    """No environment variable, no rewrite in PyTensor's database, no fork hook of ours, no theano alias, floatX as
    it was."""
    code = (
        "import os, sys, json\n"
        "import pytensor\n"
        "from pytensor.compile import optdb\n"
        "env, rewrites = dict(os.environ), set(optdb.__db__)\n"
        "forks = []\n"
        "real = os.register_at_fork\n"
        "owner = lambda f: getattr(f, '__module__', None) or "
        "getattr(getattr(f, '__self__', None), '__module__', None) or ''\n"
        "os.register_at_fork = lambda **kw: forks.extend(owner(f) for f in kw.values())\n"
        "import untapped, untapped.model, untapped.paper.terms\n"
        "untapped.SSDGM\n"
        "os.register_at_fork = real\n"
        "print(json.dumps(dict(env=sorted(set(os.environ.items()) ^ set(env.items())), "
        "rewrites=sorted(set(optdb.__db__) - rewrites),\n"
        "    forks=[m for m in forks if m.split('.')[0] in ('untapped', 'parmesan_compat')], "
        "theano=[m for m in sys.modules if m.split('.')[0] == 'theano'], floatX=pytensor.config.floatX)))\n"
    )
    changes = json.loads(run_python(code).strip().splitlines()[-1])
    assert changes == dict(env=[], rewrites=[], forks=[], theano=[], floatX="float64")


def test_lasagne_loads_on_first_use_only():
    out = run_python("import sys, untapped, untapped.backend, untapped.presets; print('lasagne' in sys.modules)")
    assert out.split() == ["False"]


def _our_ops(function):
    """Names of the ops in a compiled function that are not PyTensor's (inside fused loops too)."""
    found = set()

    def visit(op):
        scalar = getattr(op, "scalar_op", None)
        if isinstance(op, Elemwise) and isinstance(scalar, Composite):
            for node in scalar.fgraph.apply_nodes:
                visit(node.op)
        elif scalar is not None:
            visit(scalar)
        if not type(op).__module__.startswith("pytensor"):
            found.add(f"{type(op).__module__}.{type(op).__name__}")

    for node in function.maker.fgraph.apply_nodes:
        visit(node.op)
    return found


@pytest.mark.slow
def test_the_plain_mode_compiles_stock_ops_only_and_trains_like_the_c_mode():
    """Every compiled function of the plain mode holds PyTensor's ops only (the C mode's hold ours); from
    the same seed both draw the same noise (stock and fast uniforms are one stream), and only rounding differs.
    The eq. 17 reverse bound with prior z: the graph with the most pieces."""
    data = small_data(np.random.RandomState(1))
    models = {
        mode: SSDGM(mode=mode, reverse_elbo_variant="eq17", unfeatured_z="prior", **SMALL) for mode in ("plain", "c")
    }
    steps, found = {}, {}
    for mode, model in models.items():
        model.set_training_data(**data)
        steps[mode] = [model.train_step(np.arange(8), np.arange(8), np.arange(8) % 10, 0.01) for _ in range(3)]
        model.evaluate(**data)
        found[mode] = set().union(
            *(_our_ops(model.graph.function(f)) for f in ("train", "evaluate", "predict", "decode_mean"))
        )
    assert found["plain"] == set()
    assert {"untapped.fast.tanh.BiasTanh", "untapped.fast.bernoulli.BernoulliLogLikRowsAndGrad"} <= found["c"]
    for c_step, plain_step in zip(steps["c"], steps["plain"]):
        np.testing.assert_allclose(list(plain_step.values()), list(c_step.values()), rtol=1e-5, atol=1e-5)
    for c_value, plain_value in zip(models["c"].get_param_values(), models["plain"].get_param_values()):
        np.testing.assert_allclose(plain_value, c_value, rtol=1e-5, atol=1e-6)
    assert models["c"].rng_states() == models["plain"].rng_states()
