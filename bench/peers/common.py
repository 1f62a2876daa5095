"""What the peers share: the model's constants, a reference bundle's given data, and the timed epoch.

Everything here is read from ``docs/reference_format.md`` (§2-§7) and
``docs/paper.md``; nothing is imported from ``untapped`` but the benchmark's
own data and schedule (``bench/epoch_time.py``), so that every
implementation runs the very same epoch.
"""

import json
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)

#: The 20 parameters in Lasagne's order (reference_format.md §7.1), with their shapes.
PARAM_SHAPES = {
    "classifier/hidden1/W": (784, 50), "classifier/hidden1/b": (50,),
    "classifier/hidden2/W": (50, 50), "classifier/hidden2/b": (50,),
    "classifier/logits/W": (50, 10), "classifier/logits/b": (10,),
    "encoder/hidden1/W": (794, 10), "encoder/hidden1/b": (10,),
    "encoder/hidden2/W": (10, 10), "encoder/hidden2/b": (10,),
    "encoder/mean/W": (10, 2), "encoder/mean/b": (2,),
    "encoder/std/W": (10, 2), "encoder/std/b": (2,),
    "decoder/hidden1/W": (12, 250), "decoder/hidden1/b": (250,),
    "decoder/hidden2/W": (250, 500), "decoder/hidden2/b": (500,),
    "decoder/mean/W": (500, 784), "decoder/mean/b": (784,),
}  # fmt: skip
PARAM_NAMES = list(PARAM_SHAPES)
TERMS = ["labeled_elbo", "unlabeled_elbo", "reverse_elbo", "x_to_y_loss", "y_to_x_loss"]
#: The weights of the terms in the total (paper eq. 8; reference_format.md §7.4).
COEFFICIENTS = {
    "untapped": dict(labeled_elbo=0.1, unlabeled_elbo=0.1, reverse_elbo=0.1, x_to_y_loss=1.0, y_to_x_loss=0.01),
    "m2": dict(labeled_elbo=0.1, unlabeled_elbo=0.1, reverse_elbo=0.0, x_to_y_loss=1.0, y_to_x_loss=0.01),
}
#: The update (reference_format.md §7.6): Lasagne's total-norm rescale, a clip, then Adam as Lasagne's master.
OPTIMIZER = dict(max_norm=5.0, norm_epsilon=1e-7, clip_grad=1.0, beta1=0.9, beta2=0.999, epsilon=1e-4)
LEARNING_RATE = 0.01
#: The model's constants (§7.2-7.4): Concrete temperature, the flow's box, the guards.
TEMPERATURE = 1.0
Z_LOW, Z_HIGH = -np.pi / 2, np.pi / 2
#: The Bernoulli clip's bounds as float32 numbers (§7.4).
BERN_LOW = float(np.float32(1e-5))
BERN_HIGH = float(np.float32(1 - 1e-5))
N_CLASSES = 10
BATCH_NAMES = ["labeled_x", "labeled_y", "unlabeled_x", "unfeatured_y", "unfeatured_z"]
#: The six noise arrays (§4.1), by source and name.
NOISE_NAMES = [
    "labeled/gumbel_uniform", "labeled/gaussian_eps", "labeled/bernoulli_uniform",
    "unlabeled/gumbel_uniform", "unlabeled/gaussian_eps", "unfeatured/bernoulli_uniform",
]  # fmt: skip


def active_terms(model):
    """The terms a training step computes: those with a weight (M2 runs no unfeatured pass)."""
    return [t for t in TERMS if COEFFICIENTS[model][t] != 0.0]


# ---------------------------------------------------------------------------
# A reference bundle (reference_format.md §2-§3, §8)


def read_bundle(path):
    """The given data of a bundle: model, inputs, noise, initial and edge parameters, update gradients."""
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "untapped-reference" or int(f.attrs.get("format_version", -1)) != 2:
            raise ValueError(f"{path}: not a version 2 reference bundle")
        model = f.attrs["model"]
        model = model.decode() if isinstance(model, bytes) else model
        config = json.loads(f.attrs["config"])
        expected = dict(
            coefficients=COEFFICIENTS[model], optimizer=OPTIMIZER, learning_rate=LEARNING_RATE,
            concrete_temperature=TEMPERATURE, z_low=Z_LOW, z_high=Z_HIGH, exact_flow_log_det=False,
            reverse_elbo_variant="code", param_order=PARAM_NAMES,
        )  # fmt: skip
        found = dict(
            coefficients=json.loads(f.attrs["coefficients"]), optimizer=json.loads(f.attrs["optimizer"]),
            learning_rate=float(f.attrs["learning_rate"]), param_order=json.loads(f.attrs["param_order"]),
            **{k: config[k] for k in ("concrete_temperature", "z_low", "z_high", "exact_flow_log_det",
                                      "reverse_elbo_variant")},
        )  # fmt: skip
        differ = [k for k in expected if found[k] != expected[k]]
        if differ:
            raise ValueError(f"{path}: the peers implement the default {model} model; this bundle differs in {differ}")

        def section(prefix):
            return dict(
                batch={k: f[f"{prefix}inputs/{k}"][()] for k in BATCH_NAMES},
                noise={k: f[f"{prefix}noise/{k}"][()] for k in NOISE_NAMES},
            )

        steps = int(f.attrs["steps"])
        return dict(
            model=model,
            params={n: f[f"params/initial/{n}"][()] for n in PARAM_NAMES},
            **section(""),
            step_noise={k: f[f"steps/1/noise/{k}"][()] for k in NOISE_NAMES} if steps >= 1 else None,
            edge=dict(params={n: f[f"edge/params/{n}"][()] for n in PARAM_NAMES}, **section("edge/")),
            updates={c: {n: f[f"edge/updates/{c}/gradients/{n}"][()] for n in PARAM_NAMES} for c in f["edge/updates"]},
        )


def bundle_datasets(prefix, total, terms=None, forward=None, gradients=None):
    """``{name: float32 array}`` of one evaluation: ``<prefix>total``, and its terms, forward arrays, gradients."""
    out = {f"{prefix}total": total}
    out.update({f"{prefix}terms/{t}": v for t, v in (terms or {}).items()})
    out.update({f"{prefix}forward/{k}": v for k, v in (forward or {}).items()})
    out.update({f"{prefix}gradients/{k}": v for k, v in (gradients or {}).items()})
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def write_bundle(path, datasets, model, producer):
    """A port's bundle (reference_format.md §8): the root attributes and one float32 dataset per name."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["format"] = "untapped-reference"
        f.attrs["format_version"] = 2
        f.attrs["producer"] = producer
        f.attrs["model"] = model
        for name, value in datasets.items():
            f.create_dataset(name, data=np.asarray(value, dtype=np.float32))


# ---------------------------------------------------------------------------
# The timed epoch: bench/epoch_time.py's data and schedule, for every implementation


def epoch_time_module():
    """``bench/epoch_time.py`` as a module (its data, sizes and schedule), the process's environment untouched.

    Importing it applies untapped's thread settings (``untapped.configure_threads``)
    to the environment; they are ours, so a peer's process drops them again
    before its framework loads (ours sets them first thing anyway).
    """
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    before = dict(os.environ)
    import epoch_time

    for name in set(os.environ) - set(before):
        del os.environ[name]
    return epoch_time


def time_epochs(step, epochs, log, name):
    """One warm-up epoch, then ``epochs`` timed ones of the original's schedule; ``step(idx)`` -> total.

    The index batches are ``bench/epoch_time.py``'s (``epoch_indices`` from the
    same seeded generator), so every implementation trains on the same rows.
    """
    et = epoch_time_module()
    rng = np.random.default_rng(1)
    times, first_step = [], None
    for epoch in range(epochs + 1):
        batches = et.epoch_indices(rng)
        t = time.perf_counter()
        for idx in batches:
            total = step(idx)
            if first_step is None:
                first_step = time.perf_counter() - t
        dt = time.perf_counter() - t
        if not np.isfinite(total):
            raise RuntimeError(f"{name}: non-finite total {total}")
        if epoch:
            times.append(dt)
        log(f"{name}: epoch {epoch}{' (warm-up)' if not epoch else ''} {dt:.2f} s, total {total:.3f}")
    return dict(
        epoch_s=statistics.median(times), epoch_times_s=times, first_step_s=first_step, steps_per_epoch=len(batches)
    )
