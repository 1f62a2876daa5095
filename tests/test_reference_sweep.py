"""A seed sweep of the reference tolerances (``docs/reference_format.md`` §6.2).

Two sweeps, over both models, synthetic and MNIST inputs, and 1 to 1,000
rows, each dataset held to the tolerances an export stores for it; every
dataset must use less than half its tolerance, so that a correct port that
rounds differently still passes and a failure means a bug:

- the export sweep: untapped's float32 export (the export's own code, at one
  compiled model per preset whose initial parameters are set to each seed's)
  against the independent NumPy port in float32 and in float64 (cast to
  float32), and its gradients against the port's float64 central differences
  at chosen entries (:data:`EDGE_ENTRIES`, :data:`MAIN_ENTRIES`). A compiled
  call costs tens of milliseconds, so it runs at :data:`EXPORT_SEEDS`; it
  leaves out the optimiser steps (their gradients are the initial gradients'
  computation at other parameters, their updates the update cases');
- the port sweep: the NumPy port in float32 (standing for the export, which
  it matches: the export sweep) against itself in float64, on the same
  inputs, noise and edge section, made by ``untapped.reference``'s own
  recipes: the forward passes, terms, totals and update cases, at
  :data:`PORT_SEEDS`, many more seeds for the same time.

The quick tier runs the seeds of :data:`NAMED` through the export and
:data:`QUICK_PORT_SEEDS` through the port; the slow tier (``@pytest.mark.slow``,
which CI runs) the rest. ``-s`` prints the worst ``used`` per group, the
figures of §6.2.
"""

import functools
from collections import OrderedDict, defaultdict

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from support import numpy_port
from test_reference import MUTATIONS, mutate
from untapped.reference import EDGE_UPDATES, comparing, exporting, kind_of, tolerance
from untapped.reference.edge import edge_inputs, edge_params, edge_update_gradients
from untapped.reference.inputs import draw_noise, generators, make_inputs, separate_bernoulli_uniforms
from untapped.reference.tolerances import is_total, total_parts

MODELS = ("untapped", "m2")
SOURCES = ("synthetic", "mnist")
EXPORT_SEEDS = tuple(range(1000, 1024))
QUICK_PORT_SEEDS = (1, 2, 3, 4)
PORT_SEEDS = tuple(range(2000, 2200))
DIMS = dict(n_features=784, n_classes=10, n_latent=2)
#: The port's central differences: step 1e-4 times max(1, |entry|), as ``foreign_port.FD_STEP``.
FD_STEP = 1e-4
#: Gradient entries checked at every seed; the encoder's heads and the biases at the guards first.
EDGE_ENTRIES = OrderedDict([
    ("encoder/std/b", [(0,), (1,)]),
    ("encoder/std/W", [(0, 0), (3, 1), (6, 0), (9, 1)]),
    ("encoder/mean/b", [(0,), (1,)]),
    ("encoder/mean/W", [(2, 0), (5, 1)]),
    ("classifier/logits/b", [(0,), (4,)]),
    ("decoder/mean/b", [(0,), (1,), (2,)]),
    ("decoder/hidden1/W", [(10, 3)]),
    ("classifier/hidden1/W", [(300, 7)]),
    ("encoder/hidden1/W", [(400, 2)]),
])
MAIN_ENTRIES = OrderedDict([
    ("encoder/std/b", [(0,), (1,)]),
    ("encoder/mean/b", [(1,)]),
    ("classifier/logits/b", [(3,)]),
    ("decoder/mean/b", [(100,)]),
])
BOUND = 0.5


#: Seeds at the shapes of bundles that a port from the format page failed before the edge section changed.
NAMED = {99: ("m2", "mnist", 37), 7: ("untapped", "mnist", 37), 11: ("m2", "mnist", 37)}


def case(seed):
    """``(model, inputs, rows)`` of a seed: the models and sources alternate, rows log-uniform in 1..1000."""
    if seed in NAMED:
        return NAMED[seed]
    rows = int(round(10 ** np.random.default_rng([seed, 24]).uniform(0.0, 3.0)))
    return MODELS[seed % 2], SOURCES[(seed // 2) % 2], rows


@pytest.fixture(scope="module", autouse=True)
def mnist_read_once():
    """MNIST read from its files once for the module, not once per seed (``untapped.data`` keeps no copy)."""
    from untapped import data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data, "load_binarized_mnist", functools.lru_cache(maxsize=1)(data.load_binarized_mnist))
        yield


@pytest.fixture(scope="module")
def exporters():
    """One :class:`~untapped.reference.exporting.Exporter` per model, compiled once (not the export's shared cache)."""
    return {}


def exporter_for(exporters, model, seed):
    """The model's exporter with the seed's initial parameters (RandomState Glorot, §7.1) and a fresh Adam."""
    if model not in exporters:
        exporters[model] = exporting.Exporter(model, seed=0)
    ex = exporters[model]
    ex.initial_params = OrderedDict((k, np.array(v)) for k, v in numpy_port.initial_params(seed=seed).items())
    ex.reset()
    return ex


def untapped_datasets(ex, seed, rows, inputs, data_dir):
    """The datasets ``export`` writes (without the optimiser steps), computed by ``exporting``'s own code."""
    inputs_rng, noise_rng, edge_rng = generators(seed)
    batch, _ = make_inputs(inputs_rng, rows, inputs, data_dir)
    out = exporting._Datasets(ex.param_names, ex.model.coefficients)
    exporting._put_initial(out, ex, batch, draw_noise(noise_rng, rows, ex.dims))
    exporting._put_edge(out, ex, edge_rng, float(ex.model.learning_rate))
    ex.reset()
    return out.values, out.with_tolerances()


def _section(values, prefix):
    """``(params, batch, noise)`` of the main section (``prefix`` '') or the edge section ('edge/')."""
    params_at = "params/initial/" if not prefix else "edge/params/"
    names = numpy_port.param_names()
    params = OrderedDict((n, values[params_at + n]) for n in names)
    batch = {k: values[f"{prefix}inputs/{k}"] for k in numpy_port.BATCH}
    noise = {n: values[f"{prefix}noise/{n}"] for n, *_ in numpy_port.NOISE}
    return params, batch, noise


def port_options(ex):
    """The NumPy port's model settings, from the preset's hyperparameters (as the bundle's ``config``)."""
    config = ex.model.get_params()
    return dict(coefficients=dict(ex.model.coefficients), temperature=float(config["concrete_temperature"]),
                z_low=float(config["z_low"]), z_high=float(config["z_high"]),
                exact_log_det=bool(config["exact_flow_log_det"]), reverse_elbo_variant=config["reverse_elbo_variant"])


def port_datasets(values, options, dtype, learning_rate):
    """The NumPy port's forward intermediates, terms, totals and update cases, named as in the bundle."""
    out = {}
    for prefix in ("", "edge/"):
        params, batch, noise = _section(values, prefix)
        for key, value in numpy_port.trace(params, batch, noise, dtype=dtype, **options).items():
            term = key.startswith("terms/") or key == "total"
            out[f"{prefix}{key}" if term else f"{prefix}forward/{key}"] = np.asarray(value).astype(np.float32)
    params, _, _ = _section(values, "")
    for case_name in EDGE_UPDATES:
        given = {n: values[f"edge/updates/{case_name}/gradients/{n}"] for n in params}
        updated, state = numpy_port.original_update(params, given, learning_rate=learning_rate, dtype=np.float32)
        out.update({f"edge/updates/{case_name}/params/{n}": v for n, v in updated.items()})
        out.update({f"edge/updates/{case_name}/{k}": v for k, v in state.items()})
    return out


def gradient_entries(values, options):
    """The port's float64 central differences at :data:`MAIN_ENTRIES` and :data:`EDGE_ENTRIES`, by dataset name."""
    out = {}
    for prefix, entries in (("", MAIN_ENTRIES), ("edge/", EDGE_ENTRIES)):
        params, batch, noise = _section(values, prefix)
        fd = numpy_port.finite_difference_gradients(params, batch, noise, entries, step=FD_STEP, dtype=np.float64,
                                                    **options)
        for name, indices in entries.items():
            out[f"{prefix}gradients/{name}"] = (indices, np.asarray(fd[name], dtype=np.float32))
    return out


def sweep_one(exporters, seed, data_dir):
    """``{(port, dataset): used}`` at one seed, for the port in float32, in float64, and its central differences."""
    model, inputs, rows = case(seed)
    ex = exporter_for(exporters, model, seed)
    values, attrs = untapped_datasets(ex, seed, rows, inputs, data_dir)
    options = port_options(ex)
    used = {}
    with threadpool_limits(1), np.errstate(all="ignore"):
        rate = float(ex.model.learning_rate)
        ports = {"float32": port_datasets(values, options, np.float32, rate),
                 "float64": port_datasets(values, options, np.float64, rate)}
        grads = gradient_entries(values, options)
    for port, datasets in ports.items():
        for name, actual in datasets.items():
            tol = attrs[name]  # the tolerances the export stores
            used[port, name] = comparing._errors(
                np.asarray(actual), np.asarray(values[name]), tol["rtol"], tol["atol"]
            )[2]
    for name, (indices, actual) in grads.items():
        expected, tol = values[name], attrs[name]
        picked = np.array([expected[i] for i in indices], dtype=np.float32)
        used["differences", name] = comparing._errors(actual, picked, tol["rtol"], tol["atol"])[2]
    return used


# ---------------------------------------------------------------------------
# The port sweep: the NumPy port in float32 against itself in float64


PORT_COEFFICIENTS = dict(untapped=numpy_port.UNTAPPED_COEFFICIENTS, m2=numpy_port.M2_COEFFICIENTS)


def port_inputs(seed, rows, inputs, data_dir, model):
    """What an export of ``seed`` holds as given data, by the export's recipes, with the port's float32 means.

    ``{'': (params, batch, noise), 'edge/': (...)}`` and the update cases' gradients.
    """
    options = dict(coefficients=PORT_COEFFICIENTS[model])
    inputs_rng, noise_rng, edge_rng = generators(seed)
    batch, _ = make_inputs(inputs_rng, rows, inputs, data_dir)
    params = numpy_port.initial_params(seed=seed)
    sections = {}
    for prefix, p, b, raw in (("", params, batch, draw_noise(noise_rng, rows, DIMS)),
                              ("edge/", edge_params(params), *edge_inputs(edge_rng, DIMS))):
        means = numpy_port.trace(p, b, raw, dtype=np.float32, **options)
        sections[prefix] = (p, b, separate_bernoulli_uniforms(raw, means)[0])
    return sections, edge_update_gradients(edge_rng, params), options


def port_sweep_one(seed, data_dir):
    """``{('float64', dataset): used}``: the port in float64 against the port in float32 as the expected bundle."""
    model, inputs, rows = case(seed)
    used = {}
    with threadpool_limits(1), np.errstate(all="ignore"):
        sections, updates, options = port_inputs(seed, rows, inputs, data_dir, model)
        results = {}
        for dtype in (np.float32, np.float64):
            out = results[dtype] = {}
            for prefix, (params, batch, noise) in sections.items():
                for key, value in numpy_port.trace(params, batch, noise, dtype=dtype, **options).items():
                    term = key.startswith("terms/") or key == "total"
                    out[f"{prefix}{key}" if term else f"{prefix}forward/{key}"] = np.asarray(value).astype(np.float32)
            params = sections[""][0]
            for case_name, given in updates.items():
                updated, state = numpy_port.original_update(params, given, learning_rate=0.01, dtype=dtype)
                out.update({f"edge/updates/{case_name}/params/{n}": v for n, v in updated.items()})
                out.update({f"edge/updates/{case_name}/{k}": v for k, v in state.items()})
    expected_terms = results[np.float32]
    for name, expected in results[np.float32].items():
        expected = np.asarray(expected, dtype=np.float32)
        actual = np.asarray(results[np.float64][name], dtype=np.float32)
        prefix = name[:-len("total")]
        terms = {t: expected_terms[f"{prefix}terms/{t}"] for t in numpy_port.TERMS} if is_total(name) else None
        tol = tolerance(name, expected, total_parts(terms, options["coefficients"]) if terms else None)
        used["float64", name] = comparing._errors(actual, expected, tol["rtol"], tol["atol"])[2]
    return used


# ---------------------------------------------------------------------------
# Reporting


def group_of(name):
    """The group a dataset's ``used`` is reported under: its kind, and ``edge`` for the edge section."""
    kind = kind_of(name)
    kind = "update" if kind in ("param", "moment", "counter") else kind
    return f"edge {kind}" if name.startswith("edge/") else kind


def worst_by_group(results):
    """``{(port, group): (used, dataset, seed)}``, the worst over all seeds."""
    worst = defaultdict(lambda: (-1.0, None, None))
    for seed, used in results.items():
        for (port, name), u in used.items():
            key = (port, group_of(name))
            if not (u <= worst[key][0]):  # NaN counts as the worst
                worst[key] = (u, name, seed)
    return dict(worst)


def report(results):
    lines = [f"worst used over {len(results)} seeds (port, group: used, dataset, seed)"]
    for (port, group), (u, name, seed) in sorted(worst_by_group(results).items()):
        lines.append(f"  {port:11s} {group:16s} {u:.3f}  {name}  seed {seed} {case(seed)}")
    return "\n".join(lines)


def run_sweep(one, seeds, data_dir, *args):
    results = {seed: one(*args, seed, data_dir) for seed in seeds}
    print("\n" + report(results))
    return results


def assert_below_bound(results):
    failures = [(seed, key, u) for seed, used in results.items() for key, u in used.items() if not u < BOUND]
    assert not failures, f"{len(failures)} datasets at or above {BOUND} of their tolerance, e.g. {failures[:5]}"


def test_the_cases_cover_both_models_both_sources_and_1_to_1000_rows():
    for seeds in (PORT_SEEDS, EXPORT_SEEDS):
        cases = [case(seed) for seed in seeds]
        assert {c[:2] for c in cases} == {(m, s) for m in MODELS for s in SOURCES}
        rows = [c[2] for c in cases]
        assert min(rows) <= 2 and max(rows) >= 500 and sum(r <= 10 for r in rows) >= len(rows) // 5
    rows = [case(seed)[2] for seed in PORT_SEEDS]
    assert len(PORT_SEEDS) >= 200 and min(rows) == 1 and max(rows) >= 900


def test_export_at_the_named_seeds_uses_under_half_of_every_tolerance(exporters, mnist_dir):
    results = run_sweep(sweep_one, NAMED, mnist_dir, exporters)
    assert_below_bound(results)
    # everything was checked: every group, and the gradients at the edge's std head
    groups = {key for key in worst_by_group(results)}
    assert {("differences", "edge gradient"), ("float32", "edge forward"), ("float64", "edge loss"),
            ("float32", "edge update"), ("differences", "gradient"), ("float32", "forward")} <= groups
    assert all(("differences", "edge/gradients/encoder/std/b") in used for used in results.values())


def test_port_at_quick_seeds_uses_under_half_of_every_tolerance(mnist_dir):
    results = run_sweep(port_sweep_one, QUICK_PORT_SEEDS, mnist_dir)
    assert_below_bound(results)
    assert {group_of(name) for _, name in results[QUICK_PORT_SEEDS[0]]} >= {
        "forward", "loss", "edge forward", "edge loss", "edge update"
    }


@pytest.mark.slow
def test_export_sweep_uses_under_half_of_every_tolerance(exporters, mnist_dir):
    assert_below_bound(run_sweep(sweep_one, EXPORT_SEEDS, mnist_dir, exporters))


@pytest.mark.slow
def test_port_sweep_uses_under_half_of_every_tolerance(mnist_dir):
    assert_below_bound(run_sweep(port_sweep_one, PORT_SEEDS, mnist_dir))


#: Bugs of ``test_reference.MUTATIONS`` that the export sweep must catch at the seeds it runs them at.
SWEEP_MUTATIONS = ("no 1e-5 on the standard deviation of log N",
                   "straight-through gradient through the Bernoulli sample",
                   "x->y loss: the Concrete sample unclipped", "the other reading of the flow's log-det")


@pytest.mark.parametrize("name", SWEEP_MUTATIONS)
def test_the_sweep_fails_a_one_line_bug_in_the_port(name, exporters, mnist_dir, monkeypatch):
    _, function, old, new, pointer = next(m for m in MUTATIONS if m[0] == name)
    mutate(monkeypatch, function, old, new)
    for seed in (99, 7):
        used = sweep_one(exporters, seed, mnist_dir)
        over = {key[1] for key, u in used.items() if not u < 1.0}
        assert pointer in over, (name, seed, sorted(over)[:10])
