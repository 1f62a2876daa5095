"""Reference bundles (``untapped.reference``, ``docs/reference_format.md``).

One bundle is exported in-process and shared by the module (full-size model,
16 rows, 2 steps, synthetic inputs); an M2 bundle and one subprocess export
(the command line in a fresh process) are the only other compilations. The
foreign port (``foreign_port.py`` on ``numpy_port.py``) is written from the
format page and must pass ``compare``; perturbed bundles must fail and name
what was perturbed.
"""

import inspect
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from support import foreign_port, numpy_port
from untapped import cli, data, reference
from untapped.reference import exporting

ARGS = dict(model="untapped", seed=1234, rows=16, steps=2, inputs="synthetic")
CLI_ARGS = ["--model", "untapped", "--seed", "1234", "--rows", "16", "--steps", "2", "--inputs", "synthetic"]
PARAM_NAMES = numpy_port.param_names()
FORWARD = {
    "labeled": "logits y_probs y_sample z_mean z_std z_tilde z z_log_det x_mean x_sample".split(),
    "unlabeled": "logits y_probs y_sample z_mean z_std z_tilde z z_log_det x_mean".split(),
    "unfeatured": "logits y_probs x_mean x_sample".split(),
}
TERMS = list(numpy_port.TERMS)
NOISE = [name for name, *_ in numpy_port.NOISE]


def expected_names(steps):
    """Every dataset name of a bundle, in the order of the format page's §3 table."""
    names = [f"inputs/{k}" for k in numpy_port.BATCH]
    names += [f"noise/{k}" for k in NOISE]
    names += [f"params/initial/{p}" for p in PARAM_NAMES]
    names += [f"forward/{s}/{k}" for s, keys in FORWARD.items() for k in keys]
    names += [f"terms/{t}" for t in TERMS] + ["total"]
    names += [f"gradients/{p}" for p in PARAM_NAMES]
    for k in range(1, steps + 1):
        names += [f"steps/{k}/noise/{n}" for n in NOISE] + [f"steps/{k}/total"]
        names += [f"steps/{k}/gradients/{p}" for p in PARAM_NAMES]
        names += [f"steps/{k}/params/{p}" for p in PARAM_NAMES]
        names += [f"steps/{k}/adam/t"]
        for p in PARAM_NAMES:
            names += [f"steps/{k}/adam/m/{p}", f"steps/{k}/adam/v/{p}"]
    names += [f"edge/inputs/{k}" for k in numpy_port.BATCH] + [f"edge/noise/{k}" for k in NOISE]
    names += [f"edge/params/{p}" for p in PARAM_NAMES]
    names += [f"edge/forward/{s}/{k}" for s, keys in FORWARD.items() for k in keys]
    names += [f"edge/terms/{t}" for t in TERMS] + ["edge/total"] + [f"edge/gradients/{p}" for p in PARAM_NAMES]
    for case in reference.EDGE_UPDATES:
        names += [f"edge/updates/{case}/gradients/{p}" for p in PARAM_NAMES]
        names += [f"edge/updates/{case}/params/{p}" for p in PARAM_NAMES] + [f"edge/updates/{case}/adam/t"]
        for p in PARAM_NAMES:
            names += [f"edge/updates/{case}/adam/m/{p}", f"edge/updates/{case}/adam/v/{p}"]
    return names


def read_all(path):
    """``(root attrs, {name: (array, attrs)})`` of a bundle, read with plain h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        root = dict(f.attrs)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = (obj[()], dict(obj.attrs))

        f.visititems(visit)
    return root, out


def invoke(*args):
    return CliRunner().invoke(reference.main, [str(a) for a in args])


def run_cli(*args):
    """The command line in a fresh process: the console script if installed, else ``python -m``."""
    script = pathlib.Path(sys.executable).parent / "untapped-reference"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "untapped.reference"]
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=600)


def assert_one_line_error(stderr, *fragments):
    lines = [line for line in stderr.splitlines() if line.strip() and "BLAS" not in line and "warn" not in line.lower()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


# ---------------------------------------------------------------------------
# Shared bundles


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "ours.h5"
    reference.export(path, **ARGS)
    return path


@pytest.fixture(scope="module")
def contents(bundle):
    return read_all(bundle)


@pytest.fixture(scope="module")
def port_bundle(bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("port") / "theirs.h5"
    foreign_port.run(bundle, path, per_param=3, seed=0)
    return path


def copy_of(bundle, tmp_path, name="copy.h5"):
    target = tmp_path / name
    shutil.copyfile(bundle, target)
    return target


# ---------------------------------------------------------------------------
# 1. Export: layout, determinism, the original's initial weights, the recipes


def test_layout_shapes_dtypes_and_attributes(contents):
    root, datasets = contents
    assert root["format"] == "untapped-reference" and root["format_version"] == 2
    for key in ("producer", "model", "seed", "rows", "steps", "learning_rate", "inputs_source", "coefficients",
                "optimizer", "config", "param_order", "versions", "mode", "environment", "bernoulli_margin"):
        assert key in root, key
    assert (root["model"], root["seed"], root["rows"], root["steps"], root["inputs_source"]) == (
        "untapped", 1234, 16, 2, "synthetic"
    )
    assert json.loads(root["param_order"]) == PARAM_NAMES
    assert json.loads(root["coefficients"]) == dict(numpy_port.UNTAPPED_COEFFICIENTS)
    assert set(json.loads(root["optimizer"])) == set(numpy_port.OPTIMIZER_DEFAULTS)
    assert json.loads(root["versions"])["pytensor"]

    names = expected_names(steps=2)
    assert sorted(datasets) == sorted(names)
    n, widths = 16, dict(n_features=784, n_classes=10, n_latent=2)
    params = numpy_port.initial_params()
    shapes = {f"inputs/{k}": (n, w) for k, w in zip(numpy_port.BATCH, (784, 10, 784, 10, 2))}
    shapes.update({f"noise/{name}": (n, widths[w]) for name, _, _, w in numpy_port.NOISE})
    for name in names:
        array, attrs = datasets[name]
        assert array.dtype == np.float32, name
        assert {"kind", "rtol", "atol", "required"} <= set(attrs), name
        assert attrs["kind"] == reference.kind_of(name)
        assert attrs["required"] == (0 if attrs["kind"] == "given" else 1), name
        param = next((p for p in PARAM_NAMES if name.endswith("/" + p)), None)
        if param is not None:
            assert array.shape == params[param].shape, name
            assert attrs["order"] == PARAM_NAMES.index(param), name
        elif name in shapes:
            assert array.shape == shapes[name], name
        elif name.startswith(("terms/", "total")) or name.endswith(("/total", "adam/t")):
            assert array.shape == (), name
    for i, key in enumerate(NOISE):
        assert datasets[f"noise/{key}"][1]["order"] == i
        assert datasets[f"steps/2/noise/{key}"][1]["order"] == i
    assert datasets["forward/labeled/z_log_det"][0].shape == (n,)
    assert datasets["forward/unfeatured/x_mean"][0].shape == (n, 784)
    for k in (1, 2):
        assert datasets[f"steps/{k}/adam/t"][0] == k


def test_tolerance_policy_is_stored_per_dataset(contents):
    _, datasets = contents
    kinds = {"edge/params/decoder/mean/b": "given", "edge/inputs/labeled_x": "given",
             "edge/noise/labeled/gaussian_eps": "given",
             "edge/forward/labeled/x_sample": "sample", "edge/forward/unlabeled/z_log_det": "forward",
             "edge/terms/labeled_elbo": "loss", "edge/total": "loss", "edge/gradients/encoder/std/b": "gradient",
             "edge/updates/tiny/gradients/encoder/std/b": "given", "edge/updates/tiny/params/encoder/std/b": "param",
             "edge/updates/rescaled/adam/t": "counter", "edge/updates/not_rescaled/adam/v/decoder/mean/W": "moment"}
    for name, kind in kinds.items():
        assert datasets[name][1]["kind"] == kind, name
    policy = {
        "inputs/labeled_x": (0, 1e-6),
        "forward/labeled/x_sample": (0, 0),
        "steps/1/adam/t": (0, 0),
        "terms/reverse_elbo": (1e-5, 1e-5),
        "steps/2/params/decoder/mean/W": (1e-4, 1e-5),
    }
    for name, (rtol, atol) in policy.items():
        attrs = datasets[name][1]
        assert (attrs["rtol"], attrs["atol"]) == (rtol, atol), name
    # a total's atol scales with its weighted terms, which cancel (the reverse bound against the unlabeled one)
    root, _ = contents
    coefficients = json.loads(root["coefficients"])
    for prefix in ("", "edge/"):
        parts = sum(abs(c * float(datasets[f"{prefix}terms/{t}"][0])) for t, c in coefficients.items())
        assert parts > 1 and datasets[f"{prefix}total"][1]["rtol"] == 1e-5
        assert datasets[f"{prefix}total"][1]["atol"] == pytest.approx(1e-5 * parts, rel=1e-6), prefix
    assert all(datasets[f"steps/{k}/total"][1]["atol"] > 1e-5 for k in (1, 2))
    for name, rtol, factor in (
        ("forward/labeled/logits", 1e-5, 1e-5),
        ("gradients/decoder/mean/W", 1e-4, 1e-5),
        ("steps/2/adam/v/encoder/std/b", 1e-4, 1e-5),
    ):
        array, attrs = datasets[name]
        assert attrs["rtol"] == rtol
        assert attrs["atol"] == pytest.approx(factor * np.abs(array).max(), rel=1e-6), name


def test_terms_total_and_steps_are_consistent(contents):
    _, datasets = contents
    value = {name: np.float64(a) for name, (a, _) in datasets.items() if a.shape == ()}
    expected = sum(c * value[f"terms/{t}"] for t, c in numpy_port.UNTAPPED_COEFFICIENTS.items())
    assert value["total"] == pytest.approx(expected, rel=1e-6)
    # each step moved every parameter, by at most about lr per entry
    before = {p: datasets[f"params/initial/{p}"][0] for p in PARAM_NAMES}
    for k in (1, 2):
        after = {p: datasets[f"steps/{k}/params/{p}"][0] for p in PARAM_NAMES}
        moved = [np.abs(after[p] - before[p]).max() for p in PARAM_NAMES]
        assert min(moved) > 0 and max(moved) < 0.02
        before = after


def test_bundle_is_what_the_models_public_api_computes(bundle, contents, tmp_path):
    """``SSDGM.trace`` and ``total_gradients`` on the bundle's inputs and noise give the bundle's values."""
    _, datasets = contents
    model = reference.exporter("untapped", 1234).model
    model.set_param_values_by_name({p: datasets[f"params/initial/{p}"][0] for p in PARAM_NAMES})
    batch = {k: datasets[f"inputs/{k}"][0] for k in numpy_port.BATCH}
    noise = {k: datasets[f"noise/{k}"][0] for k in NOISE}
    values = {}
    for key, value in model.trace(batch, noise).items():
        values[key if key.startswith("terms/") or key == "total" else f"forward/{key}"] = value
    gradients = model.total_gradients(batch, noise)
    values.update({f"gradients/{p}": gradients[p] for p in PARAM_NAMES})
    api = reference.write_bundle(
        tmp_path / "api.h5", values, root=dict(format=reference.FORMAT, format_version=reference.FORMAT_VERSION)
    )
    report = reference.compare(bundle, api)
    assert not report["failed"] and not report["extra"], reference.format_report(report, failures_only=True)
    assert set(report["missing"]) == {
        n for n in datasets if n.startswith(("steps/", "edge/")) and datasets[n][1]["required"]
    }


def test_initial_params_are_the_originals_randomstate_glorot_draws(contents):
    # numpy_port.initial_params is the original's RandomState(1234) Glorot recipe,
    # itself checked draw by draw in tests/test_model.py.
    _, datasets = contents
    for name, expected in numpy_port.initial_params(1234).items():
        stored = datasets[f"params/initial/{name}"][0]
        assert np.array_equal(stored.view(np.uint32), expected.view(np.uint32)), name


def test_inputs_and_noise_follow_the_documented_recipe(contents):
    """§4.2 and §5 of the format page, reproduced with NumPy alone."""
    root, datasets = contents
    inputs_seq, noise_seq = np.random.SeedSequence(1234).spawn(2)
    rng = np.random.default_rng(inputs_seq)
    n = 16
    z = rng.uniform(-1.5, 1.5, size=(n, 2)).astype(np.float32)
    labeled_x = (rng.random((n, 784)) < 0.13).astype(np.float32)
    unlabeled_x = (rng.random((n, 784)) < 0.13).astype(np.float32)
    corners = data.close_corners()
    expected = dict(
        labeled_x=labeled_x,
        labeled_y=np.eye(10, dtype=np.float32)[np.arange(n) % 5],
        unlabeled_x=unlabeled_x,
        unfeatured_y=corners[np.arange(n) % 10],
        unfeatured_z=z,
    )
    for key, value in expected.items():
        assert np.array_equal(datasets[f"inputs/{key}"][0], value), key
    assert corners[0, 0] == np.float32(0.95) and corners[0, 1] == np.float32(0.05 / 9)

    rng = np.random.default_rng(noise_seq)
    shapes = numpy_port.noise_shapes(expected)
    kinds = {name: kind for name, kind, *_ in numpy_port.NOISE}
    margin = root["bernoulli_margin"]
    for prefix, means_at in (("noise", "forward"), ("steps/1/noise", None), ("steps/2/noise", None)):
        for key in NOISE:
            if kinds[key] == "uniform":
                draw = rng.random(shapes[key], dtype=np.float32)
            else:
                draw = rng.standard_normal(shapes[key], dtype=np.float32)
            stored, attrs = datasets[f"{prefix}/{key}"]
            assert stored.dtype == np.float32
            if not key.endswith("bernoulli_uniform"):
                assert np.array_equal(stored, draw), f"{prefix}/{key}"
                continue
            changed = stored != draw
            assert attrs["moved"] == changed.sum() and 0 < changed.sum() < 0.01 * draw.size, f"{prefix}/{key}"
            if means_at:  # the forward pass: every sample is >= margin from its mean
                source = key.split("/")[0]
                mean = datasets[f"forward/{source}/x_mean"][0].astype(np.float64)
                assert np.abs(stored - mean).min() >= 0.999 * margin
                assert np.abs(draw[changed] - mean[changed]).max() < margin
                assert np.array_equal(datasets[f"forward/{source}/x_sample"][0], (stored < mean).astype(np.float32))


def test_mnist_inputs_and_the_synthetic_fallback(mnist_dir, tmp_path, monkeypatch):
    rng = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0])
    batch, info = reference.make_inputs(rng, 12, "mnist", data_dir=mnist_dir)
    assert info["source"] == "mnist"
    images, digits = data.load_binarized_mnist(mnist_dir, download=False)
    assert np.array_equal(batch["labeled_x"], images[info["labeled_index"]])
    assert np.array_equal(batch["unlabeled_x"], images[info["unlabeled_index"]])
    assert set(digits[info["labeled_index"]]) <= {0, 1, 2, 3, 4}
    assert np.array_equal(batch["labeled_y"].argmax(1), digits[info["labeled_index"]])
    assert set(np.unique(batch["labeled_x"])) <= {0.0, 1.0}
    assert np.array_equal(batch["unfeatured_y"], data.close_corners()[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]])
    assert batch["unfeatured_z"].min() >= -1.5 and batch["unfeatured_z"].max() < 1.5

    # auto without any MNIST in sight: the synthetic batch, with a note; never a download
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    batch, info = reference.make_inputs(np.random.default_rng(0), 4, "auto")
    assert info["source"] == "synthetic" and "MNIST not found" in info["note"]
    # an explicit folder without MNIST is an error, not a fallback
    with pytest.raises(reference.BundleError, match="MNIST inputs"):
        reference.make_inputs(np.random.default_rng(0), 4, "auto", data_dir=tmp_path / "nothing-here")


def test_exporting_twice_gives_identical_datasets(bundle, contents, tmp_path):
    again = tmp_path / "again.h5"
    reference.export(again, **ARGS)
    root, datasets = read_all(again)
    first_root, first = contents
    assert list(datasets) == list(first)
    for name, (array, attrs) in datasets.items():
        assert array.dtype == first[name][0].dtype
        assert array.tobytes() == first[name][0].tobytes(), name
        assert attrs.keys() == first[name][1].keys(), name
    assert root.keys() == first_root.keys()
    assert bundle.read_bytes() == again.read_bytes()  # no timestamps: the very same file


@pytest.mark.slow
def test_a_plain_mode_bundle_and_the_default_one_pass_compare_both_ways(bundle, tmp_path):
    """``export --mode plain`` (stock PyTensor ops only) agrees with the default C mode's bundle within tolerance."""
    plain = tmp_path / "plain.h5"
    result = run_cli("export", plain, *CLI_ARGS, "--mode", "plain")
    assert result.returncode == 0, result.stderr
    attrs, values = read_all(plain)
    assert attrs["mode"] == "plain"
    _, ours = read_all(bundle)
    # the modes round differently: some values are not bit-identical, all within tolerance
    assert any(ours[name][0].tobytes() != values[name][0].tobytes() for name in ours if name.startswith("forward/"))
    for expected, actual in ((bundle, plain), (plain, bundle)):
        report = reference.compare(expected, actual)
        assert report["passed"], reference.format_report(report, failures_only=True)


@pytest.mark.slow
def test_command_line_export_in_a_fresh_process_then_compare(bundle, tmp_path):
    """``untapped-reference export a.h5 && ... export b.h5 && ... compare a.h5 b.h5`` exits 0 (a = the fixture)."""
    b = tmp_path / "b.h5"
    result = run_cli("export", b, *CLI_ARGS)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "synthetic" in result.stdout
    _, ours = read_all(bundle)
    _, theirs = read_all(b)
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name][0].tobytes() == theirs[name][0].tobytes(), name
    result = run_cli("compare", bundle, b)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("PASS")
    # and an existing file is not replaced without --force
    result = run_cli("export", b, "--rows", "1", "--steps", "0")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "exists", "--force")


def test_untapped_reference_is_untapped_reference(bundle, tmp_path):
    """``untapped reference`` runs the same commands as ``untapped-reference``: the same output and exit status."""
    changed = copy_of(bundle, tmp_path)
    _perturb(changed, PERTURBED[0], 1.5)
    cases = [("compare", bundle, bundle), ("compare", bundle, changed), ("compare", bundle, tmp_path / "missing.h5"),
             ("describe", bundle), ("export", "--rows", "0", tmp_path / "x.h5")]
    for args, status in zip(cases, (0, 1, 2, 0, 2)):
        alone = CliRunner().invoke(reference.main, [str(a) for a in args])
        within = CliRunner().invoke(cli.main, ["reference", *map(str, args)])
        assert alone.exit_code == within.exit_code == status, (args, alone.output, within.output)
        assert (within.stdout, within.stderr) == (alone.stdout, alone.stderr), args


# ---------------------------------------------------------------------------
# 2. Compare


def test_identical_bundles_pass(bundle):
    report = reference.compare(bundle, bundle)
    assert report["passed"], report["failed"]
    assert report["counts"]["passed"] == len(expected_names(2)) and not report["missing"] and not report["extra"]
    result = invoke("compare", bundle, bundle)
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:4] == ["dataset", "shape", "max", "abs"]
    assert any(line.split()[:2] == ["forward/labeled/logits", "16x10"] for line in lines)
    assert lines[-1].startswith("PASS")
    result = invoke("compare", bundle, bundle, "--json")
    assert result.exit_code == 0
    parsed = json.loads(result.output)
    assert parsed["passed"] is True and parsed["failed"] == [] and len(parsed["datasets"]) == len(expected_names(2))
    row = next(r for r in parsed["datasets"] if r["name"] == "gradients/decoder/mean/W")
    assert row["status"] == "pass" and row["shape"] == [500, 784] and row["max_abs_error"] == 0.0


#: One dataset of every kind, and a few more.
PERTURBED = [
    "inputs/labeled_x",
    "noise/labeled/gaussian_eps",
    "steps/2/noise/unfeatured/bernoulli_uniform",
    "params/initial/encoder/mean/W",
    "forward/labeled/logits",
    "forward/unlabeled/z_log_det",
    "forward/labeled/x_sample",
    "forward/unfeatured/x_sample",
    "terms/reverse_elbo",
    "total",
    "gradients/decoder/mean/W",
    "gradients/encoder/std/b",
    "steps/2/total",
    "steps/1/gradients/classifier/logits/b",
    "steps/2/params/encoder/std/b",
    "steps/2/adam/t",
    "steps/1/adam/m/decoder/hidden1/W",
    "steps/2/adam/v/classifier/hidden1/W",
]


def _perturb(path, name, factor):
    """Move the largest entry of ``name`` by ``factor`` times its tolerance (the next float for exact kinds)."""
    with h5py.File(path, "r+") as f:
        ds = f[name]
        array = ds[()]
        flat = array.reshape(-1).copy()
        i = int(np.argmax(np.abs(flat)))
        allowed = float(ds.attrs["atol"]) + float(ds.attrs["rtol"]) * abs(float(flat[i]))
        if allowed == 0:
            if ds.attrs["kind"] == "sample":
                flat[i] = 1.0 - flat[i]
            else:
                flat[i] = np.nextafter(flat[i], np.float32(np.inf)) if factor > 1 else flat[i]
        else:
            flat[i] = np.float32(float(flat[i]) + factor * allowed)
        ds[...] = flat.reshape(array.shape)


def _quick_first(cases, n, ids=None):
    """``cases`` for parametrize, all but the first ``n`` marked slow (the quick tier keeps a few of each kind)."""
    return [case if i < n else pytest.param(*(case if isinstance(case, tuple) else (case,)), marks=pytest.mark.slow,
                                             id=None if ids is None else ids[i])
            for i, case in enumerate(cases)]


@pytest.mark.parametrize("name", _quick_first(PERTURBED, 4))
def test_a_dataset_changed_beyond_its_tolerance_fails_and_is_named(name, bundle, tmp_path):
    changed = copy_of(bundle, tmp_path)
    _perturb(changed, name, 1.5)
    report = reference.compare(bundle, changed)
    assert not report["passed"]
    assert report["failed"] == [name]
    row = next(r for r in report["datasets"] if r["name"] == name)
    assert row["mismatches"] == 1 and row["tolerance_used"] > 1
    result = invoke("compare", bundle, changed)
    assert result.exit_code == 1
    summary = result.output.strip().splitlines()[-1]
    assert summary == f"FAIL: 1 differ: {name}"
    assert any(line.startswith(name + " ") and "fail: 1 of" in line for line in result.output.splitlines())


@pytest.mark.parametrize("name", ["forward/labeled/logits", "gradients/decoder/mean/W", "steps/2/params/encoder/std/b"])
def test_a_change_within_tolerance_passes(name, bundle, tmp_path):
    changed = copy_of(bundle, tmp_path)
    _perturb(changed, name, 0.5)
    with h5py.File(bundle, "r") as a, h5py.File(changed, "r") as b:
        assert not np.array_equal(a[name][()], b[name][()])
    report = reference.compare(bundle, changed)
    assert report["passed"], report["failed"]


def test_missing_extra_shape_and_dtype_are_reported(bundle, tmp_path):
    broken = copy_of(bundle, tmp_path)
    with h5py.File(broken, "r+") as f:
        del f["terms/x_to_y_loss"]  # a required dataset
        del f["noise/labeled/gumbel_uniform"]  # given data may be left out
        f["forward/labeled/bonus"] = np.zeros(3, np.float32)
        f["forward/extra_source/logits"] = np.zeros((16, 10), np.float32)
        logits = f["forward/unlabeled/logits"][()]
        del f["forward/unlabeled/logits"]
        f["forward/unlabeled/logits"] = logits.T.copy()
        mean = f["forward/labeled/x_mean"][()]
        del f["forward/labeled/x_mean"]
        f["forward/labeled/x_mean"] = mean.astype(np.float64)
        z = f["forward/labeled/z"][()]
        del f["forward/labeled/z"]
        f["forward/labeled/z"] = z.astype(">f4")  # still float32: the byte order does not matter
    report = reference.compare(bundle, broken)
    assert not report["passed"]
    assert report["missing"] == ["terms/x_to_y_loss"]
    assert report["not_given"] == ["noise/labeled/gumbel_uniform"]
    assert sorted(report["extra"]) == ["forward/extra_source/logits", "forward/labeled/bonus"]
    assert sorted(report["failed"]) == ["forward/labeled/x_mean", "forward/unlabeled/logits"]
    reasons = {r["name"]: r.get("reason", "") for r in report["datasets"]}
    assert reasons["forward/unlabeled/logits"] == "shape (10, 16), expected (16, 10)"
    assert reasons["forward/labeled/x_mean"] == "dtype float64, expected float32"
    result = invoke("compare", bundle, broken)
    assert result.exit_code == 1
    summary = result.output.strip().splitlines()[-1]
    for name in ("terms/x_to_y_loss", "forward/labeled/bonus", "forward/extra_source/logits",
                 "forward/unlabeled/logits", "forward/labeled/x_mean"):
        assert name in summary
    assert "noise/labeled/gumbel_uniform" not in summary
    result = invoke("compare", bundle, broken, "--failures")
    listed = [line.split()[0] for line in result.output.strip().splitlines()[1:-1]]
    assert sorted(listed) == sorted(
        ["terms/x_to_y_loss", "forward/labeled/bonus", "forward/extra_source/logits", "forward/unlabeled/logits",
         "forward/labeled/x_mean"]
    )


# ---------------------------------------------------------------------------
# 3. A foreign port, written from the format page


def test_foreign_port_passes_compare(bundle, port_bundle):
    report = reference.compare(bundle, port_bundle)
    assert report["passed"], reference.format_report(report, failures_only=True)
    c = report["counts"]
    # it computes everything; only inputs and noise are left out; gradients as entries
    assert c["missing"] == 0 and c["extra"] == 0
    assert sorted(report["not_given"]) == sorted(
        [f"inputs/{k}" for k in numpy_port.BATCH] + [f"noise/{k}" for k in NOISE]
        + [f"steps/{k}/noise/{n}" for k in (1, 2) for n in NOISE]
        + [n for n in expected_names(2) if n.startswith("edge/") and reference.kind_of(n) == "given"]
    )
    assert c["entries_only"] == 4 * len(PARAM_NAMES)  # the gradients, of both steps and of the edge section
    rows = {r["name"]: r for r in report["datasets"]}
    # its own initialiser matches ours bit for bit
    assert all(rows[f"params/initial/{p}"]["status"] == "pass" for p in PARAM_NAMES)
    # the finite differences really checked something
    sizes = {p: v.size for p, v in numpy_port.initial_params().items()}
    assert sum(rows[f"gradients/{p}"]["checked"] for p in PARAM_NAMES) == sum(min(3, sizes[p]) for p in PARAM_NAMES)
    assert max(rows[f"gradients/{p}"]["max_rel_error"] for p in PARAM_NAMES) > 0
    # and with room to spare: a port that is right uses a fraction of each tolerance
    used = max(r["tolerance_used"] for r in rows.values() if r.get("tolerance_used") is not None)
    assert used < 0.5
    result = invoke("compare", bundle, port_bundle)
    assert result.exit_code == 0, result.output
    assert "3/39200 entries" in result.output
    assert result.output.strip().splitlines()[-1].startswith("PASS")


def test_foreign_port_in_float64_passes_too(bundle, tmp_path):
    theirs = tmp_path / "theirs64.h5"
    foreign_port.run(bundle, theirs, per_param=2, seed=1, dtype=np.float64, include_given=True)
    report = reference.compare(bundle, theirs)
    assert report["passed"], reference.format_report(report, failures_only=True)
    assert report["not_given"] == []  # inputs and noise written back, compared exactly


def test_foreign_port_bug_is_caught_where_it_arises(bundle, tmp_path, monkeypatch):
    """A port that drops the original's 1e-4 guards in the Gumbel transform fails at the Concrete samples."""
    monkeypatch.setattr(numpy_port, "GUMBEL_EPS", 0.0)
    theirs = tmp_path / "buggy.h5"
    with np.errstate(all="ignore"):  # the edge's u = 0 takes the log of 0 without the guard
        foreign_port.run(bundle, theirs, per_param=1, seed=0)
    report = reference.compare(bundle, theirs)
    assert not report["passed"]
    failed = set(report["failed"])
    # g changes by ~1e-4: the samples show it plainly (the terms move by ~1e-5 relative, near their tolerance)
    assert {"forward/labeled/y_sample", "forward/unlabeled/y_sample"} <= failed
    # nothing upstream of the Concrete samples, nor anything that does not depend on them, fails
    assert "edge/forward/labeled/y_sample" in failed  # the edge's u = 0 and 0.99 show it too
    for name in failed:
        name = name[len("edge/"):] if name.startswith("edge/") else name
        assert name.endswith("y_sample") or name.startswith(("forward/unlabeled/", "terms/unlabeled_elbo",
                                                                 "terms/x_to_y_loss", "total", "steps/",
                                                                 "gradients/")), name
    for name in ("forward/labeled/logits", "forward/labeled/z", "forward/unfeatured/x_mean", "terms/labeled_elbo",
                 "terms/reverse_elbo"):
        assert name not in failed and f"edge/{name}" not in failed, name


def test_gradient_entries_are_checked(bundle, port_bundle, tmp_path):
    broken = copy_of(port_bundle, tmp_path)
    with h5py.File(broken, "r+") as f:
        value = f["gradients/classifier/logits/W/value"]
        value[0] = value[0] + np.float32(0.01)
        index = f["steps/1/gradients/decoder/mean/b/index"]
        index[0, 0] = 784  # out of range
        group = f.create_group("terms/total_as_entries")
        group.attrs["form"] = "entries"
    report = reference.compare(bundle, broken)
    reasons = {r["name"]: r.get("reason", "") for r in report["datasets"] if r["status"] == "fail"}
    assert reasons["gradients/classifier/logits/W"].startswith(
        "1 of 3 given entries outside tolerance, worst: given entry 0, at ["
    )
    row = next(r for r in report["datasets"] if r["name"] == "gradients/classifier/logits/W")
    with h5py.File(broken, "r") as f:
        assert row["worst_entry"] == 0 and row["worst_index"] == f["gradients/classifier/logits/W/index"][0].tolist()
    assert "out of range" in reasons["steps/1/gradients/decoder/mean/b"]
    assert report["extra"] == ["terms/total_as_entries"]


# ---------------------------------------------------------------------------
# 4. M2


@pytest.mark.slow
def test_m2_bundle(bundle, tmp_path):
    m2 = tmp_path / "m2.h5"
    reference.export(m2, **dict(ARGS, model="m2"))
    root, theirs = read_all(m2)
    _, ours = read_all(bundle)
    assert root["model"] == "m2" and json.loads(root["coefficients"]) == dict(numpy_port.M2_COEFFICIENTS)
    # same seed, same inputs, noise and forward pass; another total and other gradients
    for name in ours:
        if name.startswith(("inputs/", "noise/", "params/", "forward/", "terms/")):
            assert ours[name][0].tobytes() == theirs[name][0].tobytes(), name
    t = {k: float(theirs[f"terms/{k}"][0]) for k in TERMS}
    m2_total = 0.1 * t["labeled_elbo"] + 0.1 * t["unlabeled_elbo"] + t["x_to_y_loss"] + 0.01 * t["y_to_x_loss"]
    assert float(theirs["total"][0]) == pytest.approx(m2_total, rel=1e-6)
    report = reference.compare(bundle, m2)
    assert not report["passed"]
    assert "total" in report["failed"] and "forward/labeled/logits" not in report["failed"]
    assert report["notes"] == ["model: expected 'untapped', actual 'm2'"]
    port = tmp_path / "m2-port.h5"
    foreign_port.run(m2, port, per_param=2, seed=2)
    report = reference.compare(m2, port)
    assert report["passed"], reference.format_report(report, failures_only=True)


# ---------------------------------------------------------------------------
# 5. Describe and the command line's errors


def test_describe_prints_the_layout(bundle):
    result = invoke("describe", bundle)
    assert result.exit_code == 0
    out = result.output
    assert out.splitlines()[0].endswith("untapped-reference version 2")
    for fragment in ("@model = untapped", "@seed = 1234", "@rows = 16", "@inputs_source = synthetic", "inputs/",
                     "noise/", "forward/", "terms/", "gradients/", "steps/", "adam/", "edge/", "updates/",
                     "579 datasets"):
        assert fragment in out, fragment
    assert any(line.strip().startswith("logits  16x10 float32  kind=forward") for line in out.splitlines())
    assert any(line.strip().startswith("gumbel_uniform  16x10 float32  kind=given") and "order=0" in line
               for line in out.splitlines())
    assert any(line.strip().startswith("W  784x50 float32") and "order=0" in line for line in out.splitlines())


def test_bad_input_gives_one_line_errors(bundle, tmp_path):
    not_hdf5 = tmp_path / "notes.txt"
    not_hdf5.write_text("hello\n")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "untapped-checkpoint"
        f.attrs["format_version"] = 1
    future = tmp_path / "future.h5"
    with h5py.File(future, "w") as f:
        f.attrs["format"] = "untapped-reference"
        f.attrs["format_version"] = 3
    cases = [
        (("compare", tmp_path / "missing.h5", bundle), "no such file"),
        (("compare", bundle, not_hdf5), "not an HDF5 file"),
        (("compare", bundle, plain), "not an untapped reference bundle (no 'format' attribute)"),
        (("describe", other), "format 'untapped-checkpoint'"),
        (("compare", future, bundle), "version 3; this untapped reads versions 1 and 2"),
        (("describe", tmp_path), "is a folder"),
        (("export", bundle), "exists; pass --force"),
        (("export", tmp_path / "x.h5", "--rows", "0"), "--rows"),
        (("export", tmp_path / "x.h5", "--model", "m3"), "--model"),
        (("compare", bundle), "Missing argument"),
        (("frobnicate",), "No such command"),
    ]
    for args, fragment in cases:
        result = CliRunner().invoke(reference.main, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        assert_one_line_error(result.stderr, fragment)
        assert result.stdout == "", args
    assert not (tmp_path / "x.h5").exists()
    # the same from a fresh process, through python -m
    result = subprocess.run(
        [sys.executable, "-m", "untapped.reference", "compare", tmp_path / "missing.h5", bundle],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "missing.h5: no such file")


# ---------------------------------------------------------------------------
# 6. Mutations: one-line bugs put into the NumPy port must fail compare, where they are


#: (name, port function, the line as the port has it, the line as the bug has it, a dataset that must fail).
#: Each is a one-line change of ``numpy_port``'s source; the first eight are the bugs a porter put into a
#: PyTorch port, the last the one that version 1's bundles missed; the rest remove or move one guard each.
MUTATIONS = [
    ("bernoulli comparison flipped", "bernoulli", "return (uniform < mean)", "return (uniform > mean)",
     "forward/labeled/x_sample"),
    ("encoder input order swapped", "encoder_heads", "np.concatenate([x, y], axis=-1)",
     "np.concatenate([y, x], axis=-1)", "forward/labeled/z_mean"),
    ("straight-through gradient through the Bernoulli sample", "bernoulli",
     "return (uniform < mean).astype(mean.dtype)",
     "return (uniform < mean).astype(mean.dtype) + (mean - stop_gradient(mean))", "gradients/decoder/mean/b"),
    ("Concrete probabilities in the x->y loss", "trace", 'clipped_kl(b["labeled_y"], out["labeled/y_sample"])',
     'clipped_kl(b["labeled_y"], out["labeled/y_probs"])', "terms/x_to_y_loss"),
    ("gradient-norm rescale left out", "original_update", 'grads, _ = total_norm_rescale(grads, dtype(s["max_norm"]), '
     'dtype(s["norm_epsilon"]))', "grads, _ = grads, None", "edge/updates/rescaled/adam/m/decoder/mean/W"),
    ("PyTorch's Adam epsilon", "adam", "(np.sqrt(v) + dtype(epsilon))",
     "(np.sqrt(v) + dtype(epsilon) * np.sqrt(1.0 - dtype(beta2) ** t))",
     "edge/updates/not_rescaled/params/decoder/mean/W"),
    ("squared y->x loss", "euclidean", "return np.sqrt(np.sum((pred - target) ** 2, axis=-1))",
     "return np.sum((pred - target) ** 2, axis=-1)", "terms/y_to_x_loss"),
    ("the other reading of the flow's log-det", "flow_log_det", "np.prod((high - low) * s * (1.0 - s), axis=-1)",
     "(high - low) * np.prod(s * (1.0 - s), axis=-1)", "forward/labeled/z_log_det"),
    ("log clamped at -100 (PyTorch's binary_cross_entropy) instead of the clip", "log_bernoulli",
     "return np.sum(x * np.log(m) + (1.0 - x) * np.log(1.0 - m), axis=-1)",
     "return np.sum(x * np.maximum(np.log(mean), -100.0) + (1.0 - x) * np.maximum(np.log(1.0 - mean), -100.0), "
     "axis=-1)",
     "edge/terms/labeled_elbo"),
    ("decoder-mean clip without its lower end", "log_bernoulli", "m = np.clip(mean, *BERNOULLI_BOUNDS)",
     "m = np.clip(mean, 0.0, BERNOULLI_BOUNDS[1])", "edge/terms/labeled_elbo"),
    ("decoder-mean clip without its upper end", "log_bernoulli", "m = np.clip(mean, *BERNOULLI_BOUNDS)",
     "m = np.clip(mean, BERNOULLI_BOUNDS[0], 1.0)", "edge/terms/labeled_elbo"),
    ("x->y loss: the Concrete sample unclipped", "clipped_kl", "p = np.clip(pred, KL_EPS, 1.0)", "p = pred",
     "edge/terms/x_to_y_loss"),
    ("x->y loss: the label unclipped", "clipped_kl", "a = np.clip(target, KL_EPS, 1.0)", "a = target",
     "terms/x_to_y_loss"),
    ("x->y loss: the sample's leftover mass unclipped", "clipped_kl",
     "p_left = np.clip(1.0 - pred.sum(axis=-1), KL_EPS, 1.0)", "p_left = 1.0 - pred.sum(axis=-1)",
     "terms/x_to_y_loss"),
    ("x->y loss: the label's leftover mass unclipped", "clipped_kl",
     "a_left = np.clip(1.0 - target.sum(axis=-1), KL_EPS, 1.0)", "a_left = 1.0 - target.sum(axis=-1)",
     "terms/x_to_y_loss"),
    ("no 1e-5 inside the flow's log-det", "flow_log_det", "np.log(LOG_DET_EPS + np.prod(", "np.log(0.0 + np.prod(",
     "edge/forward/labeled/z_log_det"),
    ("no 1e-5 on the standard deviation of log N", "log_normal", "s = std + NORMAL_EPS", "s = std",
     "edge/terms/labeled_elbo"),
    ("Concrete density on a clamped sample (torch.distributions' clamp_probs)", "log_concrete", "k = logits.shape[-1]",
     "k, y = logits.shape[-1], np.clip(y, 1.1920929e-07, 1.0 - 1.1920929e-07)", "edge/terms/unlabeled_elbo"),
    ("no inner 1e-4 in the Gumbel transform", "gumbel", "inner = (u + GUMBEL_EPS)", "inner = (u + 0.0)",
     "edge/forward/labeled/y_sample"),
    ("no outer 1e-4 in the Gumbel transform", "gumbel", "-np.log(-np.log(inner) + GUMBEL_EPS)",
     "-np.log(-np.log(inner))", "edge/forward/labeled/y_sample"),
    ("gradient rescaled to max_norm even when below it", "total_norm_rescale",
     "multiplier = np.clip(norm, 0.0, max_norm) / (epsilon + norm)", "multiplier = max_norm / (epsilon + norm)",
     "edge/updates/not_rescaled/adam/m/decoder/mean/W"),
    ("no norm_epsilon in the rescale", "total_norm_rescale",
     "multiplier = np.clip(norm, 0.0, max_norm) / (epsilon + norm)", "multiplier = np.clip(norm, 0.0, max_norm) / norm",
     "edge/updates/tiny/adam/m/decoder/mean/W"),
    ("element clip to [-1, 1] left out", "original_update",
     'np.clip(g, -dtype(s["clip_grad"]), dtype(s["clip_grad"]))', "g",
     "edge/updates/rescaled/adam/m/classifier/hidden1/W"),
]
#: Mutations that only the edge section can catch: the main section must still pass them.
EDGE_ONLY = {"log clamped at -100 (PyTorch's binary_cross_entropy) instead of the clip",
             "decoder-mean clip without its lower end", "decoder-mean clip without its upper end",
             "no 1e-5 on the standard deviation of log N"}


def mutate(monkeypatch, function, old, new):
    """Replace ``numpy_port.<function>`` by its own source with the one line holding ``old`` changed to ``new``."""
    source = textwrap.dedent(inspect.getsource(getattr(numpy_port, function)))
    lines = [i for i, line in enumerate(source.splitlines()) if old in line]
    assert len(lines) == 1 and source.count(old) == 1, (function, old)
    scope = {}
    exec(compile(source.replace(old, new), f"<numpy_port.{function}, mutated>", "exec"), vars(numpy_port), scope)
    monkeypatch.setattr(numpy_port, function, scope[function])


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """A bundle of 2 rows and no optimiser steps (the edge section holds the update cases)."""
    path = tmp_path_factory.mktemp("mutations") / "ours.h5"
    reference.export(path, **dict(ARGS, rows=2, steps=0))
    return path


def test_the_unmutated_port_passes_the_small_bundle(small_bundle, tmp_path):
    theirs = tmp_path / "theirs.h5"
    foreign_port.run(small_bundle, theirs, per_param=1, seed=0)
    report = reference.compare(small_bundle, theirs)
    assert report["passed"], reference.format_report(report, failures_only=True)


@pytest.mark.parametrize("name, function, old, new, pointer", _quick_first(MUTATIONS, 3, [m[0] for m in MUTATIONS]),
                         ids=[m[0] for m in MUTATIONS])
def test_a_one_line_bug_in_the_port_fails_compare_where_it_is(name, function, old, new, pointer, small_bundle,
                                                                  tmp_path, monkeypatch):
    mutate(monkeypatch, function, old, new)
    theirs = tmp_path / "theirs.h5"
    with np.errstate(all="ignore"):  # several bugs take the log of 0, as they would in a port
        foreign_port.run(small_bundle, theirs, per_param=1, seed=0)
    report = reference.compare(small_bundle, theirs)
    assert not report["passed"]
    assert pointer in report["failed"], (name, report["failed"][:20])
    if name in EDGE_ONLY:
        assert all(n.startswith("edge/") for n in report["failed"]), report["failed"]
    if "gradient" in name and "rescale" not in name:  # a gradient-only bug: the values all pass
        assert all("gradients/" in n for n in report["failed"]), report["failed"]


# ---------------------------------------------------------------------------
# 7. The edge section reaches every guard it is there for (§7.7, §7.8)


def test_edge_section_reaches_its_regimes(contents):
    _, d = contents
    get = lambda name: d[name][0].astype(np.float64)  # noqa: E731
    mean = get("edge/forward/labeled/x_mean")
    assert (mean[:, 0::4] < 1e-6).all() and (mean[:, 1::4] > 1 - 1e-6).all()  # beyond both ends of the clip
    x = get("edge/inputs/labeled_x")
    assert x[:, 0::4].any() and not x[:, 1::4].all()  # with pixels that disagree at both ends
    assert (get("edge/gradients/decoder/mean/b")[0::4] == 0).all()  # the clip passes no gradient there
    y = get("edge/forward/labeled/y_sample")
    label = get("edge/inputs/labeled_y").argmax(1)
    picked = y[np.arange(len(y)), label]
    assert (picked < 0.5e-6).any() and (picked > 2e-6).any()  # the x->y clip active and inactive, not at 1e-6
    assert (get("edge/forward/unlabeled/y_sample") < 1.1920929e-07).any()  # extreme Concrete samples
    assert (get("edge/forward/unlabeled/y_sample") > 1e-30).all()  # ... still normal float32 squares
    log_det = get("edge/forward/labeled/z_log_det")
    assert np.allclose(log_det[:5], np.log(1e-5), atol=1e-5) and (log_det[5:] > -5).all()
    assert (get("edge/forward/labeled/z_std")[:, 0] < 1e-8).all()  # far below the 1e-5 of log N
    assert get("edge/noise/labeled/gumbel_uniform").min() == 0.0
    norms = {}
    for case in reference.EDGE_UPDATES:
        g = [get(f"edge/updates/{case}/gradients/{p}") for p in PARAM_NAMES]
        norms[case] = math.sqrt(sum(float(np.sum(v ** 2)) for v in g))
        m = get(f"edge/updates/{case}/adam/m/classifier/hidden1/W")
        if case != "tiny":  # the spike, clipped to 1 after the rescale: m = (1 - beta1) * 1
            assert m[0, 0] == pytest.approx(0.1, rel=1e-6)
    assert norms["rescaled"] > 5 > norms["not_rescaled"] and norms["tiny"] == pytest.approx(1e-7, rel=1e-3)


# ---------------------------------------------------------------------------
# 8. What compare says: the worst entry, NaN, long lists, swapped arguments, version 1


def test_the_worst_entry_is_named(bundle, tmp_path):
    changed = copy_of(bundle, tmp_path)
    with h5py.File(changed, "r+") as f:
        ds = f["forward/labeled/logits"]
        a = ds[()]
        a[3, 7] += 1.0
        a[5, 2] += 0.01
        ds[...] = a
    report = reference.compare(bundle, changed)
    row = next(r for r in report["datasets"] if r["name"] == "forward/labeled/logits")
    assert row["worst_index"] == [3, 7] and row["mismatches"] == 2
    assert "worst at [3, 7] (actual" in row["reason"]
    assert "worst at [3, 7]" in invoke("compare", bundle, changed).output


def test_nan_in_actual_is_reported_as_nan(bundle, tmp_path):
    changed = copy_of(bundle, tmp_path)
    with h5py.File(changed, "r+") as f:
        ds = f["terms/labeled_elbo"]
        ds[...] = np.float32(np.nan)
    report = reference.compare(bundle, changed)
    row = next(r for r in report["datasets"] if r["name"] == "terms/labeled_elbo")
    assert row["status"] == "fail" and math.isnan(row["max_abs_error"]) and math.isnan(row["tolerance_used"])
    parsed = json.loads(invoke("compare", bundle, changed, "--json").output)
    row = next(r for r in parsed["datasets"] if r["name"] == "terms/labeled_elbo")
    assert row["max_abs_error"] == "nan" and row["tolerance_used"] == "nan" and row["worst_actual"] == "nan"
    line = next(
        line
        for line in invoke("compare", bundle, changed).output.splitlines()
        if line.startswith("terms/labeled_elbo ")
    )
    assert "nan" in line and "inf" not in line


def test_hundreds_of_failures_give_a_readable_summary(bundle, tmp_path):
    changed = copy_of(bundle, tmp_path)
    with h5py.File(changed, "r+") as f:
        for name in expected_names(2):
            if f[name].attrs["required"]:
                f[name][...] = f[name][()] + np.float32(1.0)
    result = invoke("compare", bundle, changed)
    assert result.exit_code == 1
    summary = result.output.strip().splitlines()[-1]
    failed = [n for n in expected_names(2) if reference.kind_of(n) != "given"]
    assert summary.startswith(f"FAIL: {len(failed)} differ (forward 23, terms 5, total 1, gradients 20, steps/1 ")
    assert f"and {len(failed) - 5} more" in summary and "(--json lists them all)" in summary and len(summary) < 400
    parsed = json.loads(invoke("compare", bundle, changed, "--json").output)
    assert len(parsed["failed"]) == len(failed) and set(parsed["failed"]) == set(failed)


def test_swapped_arguments_get_a_hint(bundle, port_bundle, tmp_path):
    computed_only = copy_of(bundle, tmp_path)
    with h5py.File(computed_only, "r+") as f:
        for group in ("inputs", "noise", "params", "edge/params"):
            del f[group]
    report = reference.compare(computed_only, bundle)  # ours as ACTUAL: its given data are "extra"
    assert report["failed"] == [] and report["missing"] == [] and report["extra"]
    assert "swapped" in report["hint"]
    assert invoke("compare", computed_only, bundle).output.splitlines()[-2].startswith("hint: every difference")
    assert reference.compare(bundle, computed_only)["hint"] is None
    result = invoke("compare", port_bundle, bundle)  # a port's gradient entries as EXPECTED
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "EXPECTED must hold full arrays", "swapped")


def test_version_1_bundles(bundle, tmp_path):
    v1 = copy_of(bundle, tmp_path, "v1.h5")
    with h5py.File(v1, "r+") as f:
        del f["edge"]
        f.attrs["format_version"] = 1
    report = reference.compare(v1, v1)
    assert report["passed"] and report["counts"]["datasets"] == 256
    for args, fragment in (((bundle, v1), "ACTUAL needs format_version 2 and the edge/ section"),
                           ((v1, bundle), "EXPECTED is version 1 (no edge/ section)")):
        result = invoke("compare", *args)
        assert result.exit_code == 2
        assert_one_line_error(result.stderr, fragment)


# ---------------------------------------------------------------------------
# 9. Export: where the inputs come from, and where the bundle cannot go


def test_auto_inputs_find_mnist_as_run_mnist_does(mnist_dir, tmp_path, monkeypatch):
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv(data.ENV_VAR, str(mnist_dir))
    _, info = reference.make_inputs(rng(), 2, "auto")
    assert info["source"] == "mnist" and info["found_by"] == data.ENV_VAR
    assert reference.inputs_line(info) == f"inputs: MNIST from {mnist_dir} (found by {data.ENV_VAR})"
    _, info = reference.make_inputs(rng(), 2, "auto", data_dir=mnist_dir)
    assert info["found_by"] == "--data-dir"
    monkeypatch.delenv(data.ENV_VAR)
    cache = tmp_path / "cache" / "untapped" / "mnist"
    cache.mkdir(parents=True)
    for name in data.IDX_FILES:
        (cache / f"{name}.gz").symlink_to(mnist_dir / f"{name}.gz")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _, info = reference.make_inputs(rng(), 2, "auto")
    assert info["source"] == "mnist" and info["found_by"] == "the user cache" and info["location"] == str(cache)
    # the command line says it in one line
    result = CliRunner().invoke(reference.main, ["export", str(tmp_path / "b.h5"), "--rows", "1", "--steps", "0"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("inputs: ")]
    assert lines == [f"inputs: MNIST from {cache} (found by the user cache)"]
    assert "(mnist inputs)" in result.stdout


def test_export_to_an_unwritable_place_fails_before_computing(tmp_path, monkeypatch):
    def no_computing(*args, **kwargs):
        raise AssertionError("computed before checking the output")

    monkeypatch.setattr(exporting, "compute", no_computing)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out, fragments in ((tmp_path / "no" / "such" / "folder" / "x.h5", ("cannot write there", "is not a folder")),
                           (a_file / "x.h5", ("cannot write there", "is not a folder")),
                           (tmp_path, ("is a directory",))):
        result = CliRunner().invoke(reference.main, ["export", str(out), "--force"])
        assert result.exit_code == 2, result.output
        assert_one_line_error(result.stderr, *fragments)
    with pytest.raises(reference.BundleError, match="cannot write there"):
        reference.export(a_file / "x.h5")
    with pytest.raises(reference.BundleError, match="is a folder"):
        reference.export(tmp_path, overwrite=True)
