"""The peers of ``bench/peers/`` compute untapped's step: their bundles pass ``compare`` against ours.

Each peer (JAX jit, PyTorch eager, ``torch.compile``) reads a reference
bundle's initial parameters, inputs and noise, and writes what its own
training step computes from them (forward arrays, terms, total, gradient;
step 1's total, gradient, parameters and Adam state; the edge section and its
update cases) in the bundle format (``docs/reference_format.md`` §8); every
dataset must be within its tolerance of untapped's. The peers' packages are
the optional extra ``bench`` (``requirements-bench.txt``); without them these
checks skip, and only the extra's pins are checked.
"""

import importlib.util
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO
from untapped import reference

sys.path.insert(0, str(REPO / "bench" / "peers"))

ARGS = dict(seed=1234, rows=16, steps=1, inputs="synthetic")
CASES = [(model, peer) for model in ("untapped", "m2") for peer in ("jax", "torch", "torch-compile")]


def test_the_bench_extra_starts_at_its_pins():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    low = {}
    for r in map(Requirement, extra):
        (spec,) = r.specifier
        assert spec.operator == ">=", r
        low[canonicalize_name(r.name)] = spec.version
    pinned = {}
    for line in (REPO / "requirements-bench.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            (spec,) = Requirement(line).specifier
            assert spec.operator == "==", line
            pinned[canonicalize_name(Requirement(line).name)] = spec.version
    assert pinned == low


def needs(peer):
    for module in ("jax",) if peer == "jax" else ("torch",):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the bench extra: requirements-bench.txt)")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("peers")
    out = {}
    for model in ("untapped", "m2"):
        out[model] = folder / f"{model}.h5"
        reference.export(out[model], model=model, **ARGS)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model, peer", CASES)
def test_a_peers_first_step_passes_compare(bundles, tmp_path, model, peer):
    needs(peer)
    import check

    theirs = tmp_path / f"{peer}.h5"
    check.write_peer_bundle(bundles[model], theirs, peer)
    report = reference.compare(bundles[model], theirs)
    statuses = {d["name"]: d["status"] for d in report["datasets"]}
    step = [n for n in statuses
            if n.startswith(("terms/", "total", "gradients/", "steps/1/", "edge/terms/", "edge/gradients/"))
            and not n.startswith("steps/1/noise/")]  # fmt: skip
    assert len(step) == 5 + 1 + 20 + (1 + 20 + 20 + 1 + 40) + 5 + 20
    assert all(statuses[n] == "pass" for n in step), {n: statuses[n] for n in step if statuses[n] != "pass"}
    assert report["passed"], (report["failed"], report["missing"], report["extra"])


def test_check_refuses_a_file_that_is_not_there(tmp_path, capsys):
    import check

    with pytest.raises(SystemExit) as exit_:
        check.main([str(tmp_path / "absent.h5"), "--peer", "jax"])
    assert exit_.value.code == 2
    assert "no such file" in capsys.readouterr().err
