"""A foreign port's side of the reference format, written from ``docs/reference_format.md`` alone.

It stands for someone porting untapped to another framework: it imports
nothing from ``untapped``, reads an expected bundle with h5py only as the
page describes, computes with the independent NumPy implementation in
``tests/support/numpy_port.py``, and writes its own bundle in the page's format, which
``untapped-reference compare`` then checks against the expected one.

What it computes, and how (the page's section in brackets):

- the forward pass, the five terms and the total in float32, from the
  bundle's inputs, noise and initial parameters (§7.2-7.4);
- gradients by central differences in float64 (step 1e-4 times max(1, |entry|))
  for a handful of entries of every parameter, written as gradient entries
  (§6.3): NumPy has no
  automatic differentiation, and differences of the full 571,948 parameters
  would take hours;
- the optimiser steps, each from the expected state after the previous step
  (§7.6): the step's total and gradient entries, and the update driven by the
  expected bundle's ``steps/k/gradients`` (the page's route for checking an
  optimiser alone), since full gradients are out of reach;
- its own initial parameters from ``RandomState(seed)`` (§7.1), so that
  ``compare`` checks the initialisation bit for bit;
- the edge section (§7.7-7.8): the forward pass, terms and gradient entries
  at ``edge/params`` on ``edge/inputs`` and ``edge/noise``, and each update
  case, one update of ``params/initial`` by its given gradients.
"""

import json

import h5py
import numpy as np

from . import numpy_port as port

FORMAT = "untapped-reference"
FORMAT_VERSION = 2
PRODUCER = "untapped tests/support/foreign_port.py (NumPy)"
#: The sizes of the original model; the port's initialiser only covers these.
#: The central differences' step, relative to the entry (``numpy_port.finite_difference_gradients``): their
#: rounding, |total| 1e-16 / step, is then a few hundredths of the smallest gradient tolerance of edge/, and
#: a step moves no decoder mean by nearly the 1e-3 that would flip a Bernoulli sample.
FD_STEP = 1e-4
DEFAULT_SIZES = dict(n_features=784, n_classes=10, n_latent=2, classifier_hidden=[50, 50], encoder_hidden=[10, 10],
                     decoder_hidden=[250, 500])


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _arrays_under(group, prefix=""):
    """``{'<sub>/<name>': array}`` of every dataset under ``group``."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[prefix + name] = obj[()]

    group.visititems(visit)
    return out


def read_bundle(path):
    """What a port needs from a bundle (§2, §3): attributes, inputs, noise, initial parameters, step data."""
    with h5py.File(path, "r") as f:
        attrs = {k: _text(v) for k, v in f.attrs.items()}
        if attrs.get("format") != FORMAT or int(attrs.get("format_version", -1)) != FORMAT_VERSION:
            raise ValueError(f"{path}: not a version {FORMAT_VERSION} reference bundle")
        names = json.loads(attrs["param_order"])
        steps = int(attrs["steps"])
        return dict(
            attrs=attrs,
            config=json.loads(attrs["config"]),
            coefficients=json.loads(attrs["coefficients"]),
            optimizer=json.loads(attrs["optimizer"]),
            learning_rate=float(attrs["learning_rate"]),
            seed=int(attrs["seed"]),
            names=names,
            batch={k: f["inputs"][k][()] for k in port.BATCH},
            noise=_arrays_under(f["noise"]),
            params={n: f["params/initial"][n][()] for n in names},
            steps=[
                dict(
                    noise=_arrays_under(f[f"steps/{k}/noise"]),
                    gradients={n: f[f"steps/{k}/gradients"][n][()] for n in names},
                    params={n: f[f"steps/{k}/params"][n][()] for n in names},
                    adam=_arrays_under(f[f"steps/{k}/adam"], "adam/"),
                )
                for k in range(1, steps + 1)
            ],
            edge=dict(
                params={n: f["edge/params"][n][()] for n in names},
                batch={k: f["edge/inputs"][k][()] for k in port.BATCH},
                noise=_arrays_under(f["edge/noise"]),
                updates={
                    case: {n: f[f"edge/updates/{case}/gradients"][n][()] for n in names} for case in f["edge/updates"]
                },
            ),
        )


def _options(bundle):
    """The model settings the NumPy port takes, from the ``config`` and ``coefficients`` attributes (§2)."""
    config = bundle["config"]
    return dict(
        coefficients=bundle["coefficients"],
        temperature=float(config["concrete_temperature"]),
        z_low=float(config["z_low"]),
        z_high=float(config["z_high"]),
        exact_log_det=bool(config["exact_flow_log_det"]),
        reverse_elbo_variant=config["reverse_elbo_variant"],
    )


def pick_entries(params, rng, per_param):
    """``per_param`` random entries (index tuples) of every parameter."""
    entries = {}
    for name, value in params.items():
        flat = rng.choice(value.size, size=min(per_param, value.size), replace=False)
        entries[name] = [tuple(int(i) for i in np.unravel_index(j, value.shape)) for j in flat]
    return entries


def gradient_entries(params, batch, noise, entries, options):
    """Central differences in float64 -> ``{name: ('entries', index (n, ndim), value float32 (n,))}``."""
    fd = port.finite_difference_gradients(params, batch, noise, entries, step=FD_STEP, dtype=np.float64, **options)
    out = {}
    for name, indices in entries.items():
        index = np.array(indices, dtype=np.int64).reshape(len(indices), np.ndim(params[name]))
        out[name] = ("entries", index, np.asarray(fd[name], dtype=np.float32))
    return out


def compute(bundle, per_param=3, seed=0, include_given=False, dtype=np.float32):
    """The port's datasets, by name (§3); gradients as ``('entries', index, value)`` tuples.

    ``dtype`` is that of the forward pass and the totals (float64 stands for a
    port that computes in double precision and writes float32).
    """
    options = _options(bundle)
    batch, params = bundle["batch"], bundle["params"]
    rng = np.random.default_rng(seed)
    out = {}
    if include_given:
        out.update({f"inputs/{k}": v for k, v in batch.items()})
        out.update({f"noise/{k}": v for k, v in bundle["noise"].items()})
    sizes = {k: bundle["config"].get(k) for k in DEFAULT_SIZES}
    if sizes == DEFAULT_SIZES:  # our own initialiser, checked bit for bit by compare
        for name, value in port.initial_params(seed=bundle["seed"]).items():
            out[f"params/initial/{name}"] = value

    trace = port.trace(params, batch, bundle["noise"], dtype=dtype, **options)
    for key, value in trace.items():
        out[key if key.startswith("terms/") or key == "total" else f"forward/{key}"] = value
    entries = pick_entries(params, rng, per_param)
    for name, value in gradient_entries(params, batch, bundle["noise"], entries, options).items():
        out[f"gradients/{name}"] = value

    # The edge section (§7.7): the same computation on its own parameters, inputs and noise.
    edge = bundle["edge"]
    if include_given:
        out.update({f"edge/inputs/{k}": v for k, v in edge["batch"].items()})
        out.update({f"edge/noise/{k}": v for k, v in edge["noise"].items()})
        out.update({f"edge/params/{k}": v for k, v in edge["params"].items()})
        out.update({f"edge/updates/{c}/gradients/{k}": v for c, g in edge["updates"].items() for k, v in g.items()})
    trace = port.trace(edge["params"], edge["batch"], edge["noise"], dtype=dtype, **options)
    for key, value in trace.items():
        out[f"edge/{key}" if key.startswith("terms/") or key == "total" else f"edge/forward/{key}"] = value
    entries = pick_entries(edge["params"], rng, per_param)
    for name, value in gradient_entries(edge["params"], edge["batch"], edge["noise"], entries, options).items():
        out[f"edge/gradients/{name}"] = value

    settings = {k: float(v) for k, v in bundle["optimizer"].items()}
    # The update cases (§7.8): one update of params/initial, from a fresh Adam state, by the given gradients.
    for case, given in edge["updates"].items():
        updated, state = port.original_update(
            params, given, port.initial_adam_state(params), learning_rate=bundle["learning_rate"], dtype=np.float32,
            **settings
        )
        for name in bundle["names"]:
            out[f"edge/updates/{case}/params/{name}"] = updated[name]
        for key, value in state.items():
            out[f"edge/updates/{case}/{key}"] = value
    for k, step in enumerate(bundle["steps"], start=1):
        # Each step starts from the expected state after the previous one (§7.6).
        if k == 1:
            current, state = dict(params), port.initial_adam_state(params)
        else:
            before = bundle["steps"][k - 2]
            current, state = dict(before["params"]), dict(before["adam"])
        noise = step["noise"]
        if include_given:
            out.update({f"steps/{k}/noise/{key}": v for key, v in noise.items()})
        out[f"steps/{k}/total"] = port.total(current, batch, noise, dtype=dtype, **options)
        entries = pick_entries(current, rng, per_param)
        for name, value in gradient_entries(current, batch, noise, entries, options).items():
            out[f"steps/{k}/gradients/{name}"] = value
        # The update alone, driven by the expected gradients (§7.6, last paragraph).
        current, state = port.original_update(
            current, step["gradients"], state, learning_rate=bundle["learning_rate"], dtype=np.float32, **settings
        )
        for name in bundle["names"]:
            out[f"steps/{k}/params/{name}"] = current[name]
        for key, value in state.items():
            out[f"steps/{k}/{key}"] = value
    return out


def write_bundle(path, datasets, attrs=None):
    """Write ``datasets`` in the format (§8): float32 datasets; entries as groups with ``form='entries'``."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["producer"] = PRODUCER
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        for name, value in datasets.items():
            if isinstance(value, tuple) and value[0] == "entries":
                group = f.create_group(name)
                group.attrs["form"] = "entries"
                group.create_dataset("index", data=value[1])
                group.create_dataset("value", data=value[2])
            else:
                f.create_dataset(name, data=np.asarray(value, dtype=np.float32))
    return path


def run(expected_path, out_path, per_param=3, seed=0, include_given=False, dtype=np.float32):
    """Read ``expected_path``, compute, write the port's bundle to ``out_path``; returns the datasets."""
    from threadpoolctl import threadpool_limits

    bundle = read_bundle(expected_path)
    with threadpool_limits(1):  # small matrices: BLAS threads only add overhead here
        datasets = compute(bundle, per_param=per_param, seed=seed, include_given=include_given, dtype=dtype)
    attrs = {k: bundle["attrs"][k] for k in ("model", "seed", "rows", "steps") if k in bundle["attrs"]}
    write_bundle(out_path, datasets, attrs)
    return datasets
