"""Exporting a bundle: every dataset computed by the model, with its attributes, written to a file.

The values come from the model's own compiled functions on the given batch
and noise (:class:`Exporter`): the forward trace and the five terms
(:meth:`SSDGM.trace <untapped.model.SSDGM.trace>`), the gradients
(:meth:`~untapped.model.SSDGM.total_gradients`), the optimiser steps
(:meth:`~untapped.model.SSDGM.step_with_noise`) and the edge section's
updates by given gradients (:meth:`~untapped.model.SSDGM.apply_gradients`).
:func:`compute` collects them in the order of ``docs/reference_format.md``
§3; :func:`export` writes them.
"""

import json
import pathlib
from collections import OrderedDict

import numpy as np

from untapped.files import jsonable
from untapped.presets import DEFAULT_MODE, DEFAULT_SEED, MODELS, MODES
from untapped.reference.bundle import FORMAT, FORMAT_VERSION, BundleError, check_writable, write_bundle
from untapped.reference.edge import edge_inputs, edge_params, edge_update_gradients
from untapped.reference.inputs import (
    BERNOULLI_MARGIN,
    draw_noise,
    generators,
    inputs_line,
    make_inputs,
    separate_bernoulli_uniforms,
)
from untapped.reference.tolerances import tolerance, total_parts

DEFAULT_ROWS = 16
DEFAULT_STEPS = 2
MAX_ROWS = 10_000
#: Lasagne's ``total_norm_constraint`` epsilon (fixed in the original).
NORM_EPSILON = 1e-7


# ---------------------------------------------------------------------------
# The model a bundle is computed with


class Exporter:
    """The model a bundle is computed with: an :class:`~untapped.model.SSDGM` of a preset and seed.

    Every value comes from the model's own compiled functions, with the
    noise given: :meth:`forward` from ``SSDGM.trace`` and
    ``SSDGM.total_gradients``, :meth:`step` from ``total_gradients`` then
    ``SSDGM.step_with_noise``, :meth:`update` from ``SSDGM.apply_gradients``.
    :meth:`reset` brings back the seed's parameters and a fresh Adam state.
    """

    def __init__(self, model="untapped", seed=DEFAULT_SEED, mode=DEFAULT_MODE):
        from untapped.model import SSDGM

        if model not in MODELS:
            raise BundleError(f"model must be one of {', '.join(MODELS)}, not {model!r}")
        if mode not in MODES:
            raise BundleError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.name, self.mode = model, mode
        self.model = SSDGM.from_preset(model, seed=seed, mode=mode)
        self.initial_params = OrderedDict((k, np.array(v)) for k, v in self.model.param_values_by_name().items())
        self.initial_state = OrderedDict((k, np.array(v)) for k, v in self.model.optimizer_state().items())
        self.param_names = list(self.model.param_names)

    @property
    def dims(self):
        return self.model.dims

    def reset(self):
        """Back to the initial parameters and a fresh Adam state."""
        self.model.set_param_values_by_name(self.initial_params)
        self.model.set_optimizer_state(self.initial_state)

    def trace(self, batch, noise):
        """Every intermediate of the three passes, the terms and the total (``SSDGM.trace``)."""
        return self.model.trace(batch, noise)

    def gradients(self, batch, noise):
        """The gradient of the total for every parameter, by name (``SSDGM.total_gradients``)."""
        values = self.model.total_gradients(batch, noise)
        return OrderedDict((name, values[name]) for name in self.param_names)

    def forward(self, batch, noise):
        """``(trace, gradients)`` at the current parameters."""
        return self.trace(batch, noise), self.gradients(batch, noise)

    def step(self, batch, noise, learning_rate):
        """One training step from the current state; returns the total and the raw gradients it applied."""
        gradients = self.gradients(batch, noise)
        total = self.model.step_with_noise(batch, noise, learning_rate)
        return np.float32(total), gradients

    def update(self, gradients, learning_rate):
        """The training update applied to ``gradients`` (name -> raw gradient) from the current state."""
        self.model.apply_gradients(gradients, learning_rate)


_EXPORTERS = {}


def exporter(model="untapped", seed=DEFAULT_SEED, mode=DEFAULT_MODE):
    """The :class:`Exporter` for (model, seed, mode), made (and its functions compiled) once per process."""
    key = (model, int(seed), mode)
    if key not in _EXPORTERS:
        _EXPORTERS[key] = Exporter(model, int(seed), mode)
    return _EXPORTERS[key]


# ---------------------------------------------------------------------------
# The datasets, in the order of the format's §3


class _Datasets:
    """Datasets by name in the order they are put, with their attributes (``order``, ``moved``, ...)."""

    def __init__(self, param_names, coefficients):
        self.values, self.attrs = OrderedDict(), OrderedDict()
        self.order = {name: i for i, name in enumerate(param_names)}
        self.coefficients = dict(coefficients)
        #: total's name -> the size of its weighted terms (:func:`total_parts`), which its atol scales with.
        self.parts = {}

    def put(self, name, value, **extra):
        self.values[name] = np.asarray(value)
        self.attrs[name] = dict(extra)

    def put_arrays(self, prefix, arrays):
        """``prefix/<name>`` for each array; a parameter's name gets its ``order``."""
        for name, value in arrays.items():
            extra = {"order": self.order[name]} if name in self.order else {}
            self.put(f"{prefix}/{name}", value, **extra)

    def put_noise(self, prefix, noise, moved):
        from untapped.paper import samplers

        for i, spec in enumerate(samplers.NOISE):
            key = samplers.noise_key(spec)
            extra = dict(order=i, distribution=spec.distribution)
            if key in moved:
                extra["moved"] = moved[key]
            self.put(f"{prefix}/{key}", noise[key], **extra)

    def put_trace(self, prefix, trace):
        """The forward intermediates under ``<prefix>forward/``, the terms and total under ``prefix``."""
        for key, value in trace.items():
            term = key.startswith("terms/") or key == "total"
            self.put(f"{prefix}{key}" if term else f"{prefix}forward/{key}", value)
        self.note_parts(f"{prefix}total", trace)

    def note_parts(self, name, trace):
        """Remember the size of the weighted terms of ``trace`` as the parts of the total ``name``."""
        terms = {k.split("/", 1)[1]: v for k, v in trace.items() if k.startswith("terms/")}
        self.parts[name] = total_parts(terms, self.coefficients)

    def put_optimizer(self, prefix, model):
        """The parameters and Adam's state of ``model``: ``prefix/params/<param>``, ``prefix/adam/...``."""
        self.put_arrays(f"{prefix}/params", model.param_values_by_name())
        for key, value in model.optimizer_state().items():
            param = key.split("/", 2)[2] if key.count("/") >= 2 else None
            self.put(f"{prefix}/{key}", value, **({"order": self.order[param]} if param else {}))

    def with_tolerances(self):
        """Every dataset's attributes with its tolerances (:func:`tolerance`) first."""
        return OrderedDict((name, OrderedDict(**tolerance(name, value, self.parts.get(name)), **self.attrs[name]))
                           for name, value in self.values.items())


def _separated(ex, batch, noise):
    """``noise`` with its Bernoulli uniforms moved away from the decoder means at the current parameters."""
    return separate_bernoulli_uniforms(noise, ex.trace(batch, noise))


def _put_initial(out, ex, batch, raw_noise):
    """Inputs, noise, initial parameters, and the trace and gradients there (§3's first part)."""
    noise, moved = _separated(ex, batch, raw_noise)
    trace, grads = ex.forward(batch, noise)
    out.put_arrays("inputs", batch)
    out.put_noise("noise", noise, moved)
    out.put_arrays("params/initial", ex.initial_params)
    out.put_trace("", trace)
    out.put_arrays("gradients", grads)


def _put_step(out, ex, k, batch, raw_noise, learning_rate):
    """Optimiser step ``k`` from the current state, with its own noise (§7.6)."""
    noise, moved = _separated(ex, batch, raw_noise)
    out.note_parts(f"steps/{k}/total", ex.trace(batch, noise))
    total, grads = ex.step(batch, noise, learning_rate)
    out.put_noise(f"steps/{k}/noise", noise, moved)
    out.put(f"steps/{k}/total", total)
    out.put_arrays(f"steps/{k}/gradients", grads)
    out.put_optimizer(f"steps/{k}", ex.model)


def _put_edge(out, ex, rng, learning_rate):
    """The edge section (§7.7, §7.8): its own rows, parameters and noise, and three update cases."""
    params = edge_params(ex.initial_params)
    batch, raw_noise = edge_inputs(rng, ex.dims)
    ex.model.set_param_values_by_name(params)
    noise, moved = _separated(ex, batch, raw_noise)
    trace, grads = ex.forward(batch, noise)
    out.put_arrays("edge/inputs", batch)
    out.put_noise("edge/noise", noise, moved)
    out.put_arrays("edge/params", params)
    out.put_trace("edge/", trace)
    out.put_arrays("edge/gradients", grads)
    for case, given in edge_update_gradients(rng, ex.initial_params).items():
        ex.reset()
        ex.update(given, learning_rate)
        out.put_arrays(f"edge/updates/{case}/gradients", given)
        out.put_optimizer(f"edge/updates/{case}", ex.model)


def _root_attrs(ex, seed, rows, steps, info):
    """The root attributes (§2)."""
    from untapped import __version__
    from untapped.backend import environment

    est, env = ex.model, environment(ex.mode)
    optimizer = dict(max_norm=float(est.max_norm), norm_epsilon=NORM_EPSILON, clip_grad=float(est.clip_grad),
                     beta1=float(est.adam_beta1), beta2=float(est.adam_beta2), epsilon=float(est.adam_epsilon))
    return OrderedDict(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        producer=f"untapped {__version__}",
        model=ex.name,
        seed=int(seed),
        rows=rows,
        steps=steps,
        learning_rate=float(est.learning_rate),
        inputs_source=info["source"],
        bernoulli_margin=BERNOULLI_MARGIN,
        coefficients=json.dumps(dict(est.coefficients)),
        optimizer=json.dumps(optimizer),
        config=json.dumps(jsonable(est.get_params()), sort_keys=True),
        param_order=json.dumps(ex.param_names),
        versions=json.dumps(env["versions"], sort_keys=True),
        mode=ex.mode,
        blas__ldflags=str(env["blas__ldflags"]),
        environment=json.dumps(env, sort_keys=True),
    )


def _group_attrs(info, steps, learning_rate):
    """The attributes of the groups ``inputs`` and ``steps`` (§3)."""
    inputs = OrderedDict(source=info["source"], labeled_digits=info["labeled_digits"])
    if info["source"] == "mnist":
        inputs.update(labeled_index=info["labeled_index"], unlabeled_index=info["unlabeled_index"])
    return {"inputs": inputs, "steps": OrderedDict(count=steps, learning_rate=learning_rate)}


def _checked_sizes(rows, steps):
    if not 1 <= int(rows) <= MAX_ROWS:
        raise BundleError(f"rows must be between 1 and {MAX_ROWS}, not {rows}")
    if int(steps) < 0:
        raise BundleError(f"steps must be >= 0, not {steps}")
    return int(rows), int(steps)


# ---------------------------------------------------------------------------
# Computing and writing


def compute(model="untapped", seed=DEFAULT_SEED, rows=DEFAULT_ROWS, steps=DEFAULT_STEPS, inputs="auto", data_dir=None,
            download=False, mode=DEFAULT_MODE):
    """Every dataset of a bundle, in memory: ``(datasets, attrs, root_attrs, group_attrs, info)``.

    ``datasets`` maps a dataset name (``forward/labeled/logits``) to an array,
    ``attrs`` the same names to their attributes (tolerances, ``order``, ...);
    ``info`` describes the inputs (:func:`make_inputs`).
    """
    rows, steps = _checked_sizes(rows, steps)
    inputs_rng, noise_rng, edge_rng = generators(seed)
    batch, info = make_inputs(inputs_rng, rows, inputs, data_dir, download)
    ex = exporter(model, seed, mode)
    ex.reset()
    noise_sets = [draw_noise(noise_rng, rows, ex.dims) for _ in range(steps + 1)]
    learning_rate = float(ex.model.learning_rate)
    out = _Datasets(ex.param_names, ex.model.coefficients)
    _put_initial(out, ex, batch, noise_sets[0])
    for k in range(1, steps + 1):
        _put_step(out, ex, k, batch, noise_sets[k], learning_rate)
    _put_edge(out, ex, edge_rng, learning_rate)
    ex.reset()
    root, group_attrs = _root_attrs(ex, seed, rows, steps, info), _group_attrs(info, steps, learning_rate)
    return out.values, out.with_tolerances(), root, group_attrs, info


def export(path, model="untapped", seed=DEFAULT_SEED, rows=DEFAULT_ROWS, steps=DEFAULT_STEPS, inputs="auto",
           data_dir=None, download=False, mode=DEFAULT_MODE, overwrite=False):
    """Compute a bundle (:func:`compute`) and write it to ``path`` atomically; returns a summary dict."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"{path} exists; pass --force to replace it")
    check_writable(path)
    datasets, attrs, root, group_attrs, info = compute(model, seed, rows, steps, inputs, data_dir, download, mode)
    write_bundle(path, datasets, attrs, root, group_attrs)
    return OrderedDict(
        path=str(path),
        datasets=len(datasets),
        inputs_source=info["source"],
        note=info.get("note"),
        inputs=inputs_line(info),
        total=float(datasets["total"]),
        steps=int(steps),
    )
