"""Epoch time of untapped and M2 at the original's schedule, against the GEMM floor.

One process, one run (``python bench/epoch_time.py [--json out.json]``):

1. PyTensor's compile cache is pointed at a fresh, empty temporary folder
   (before PyTensor is imported), so the first compile is a cold one.
2. For each model (untapped, then M2), on synthetic binary data of the MNIST
   sizes (35,735 labeled, 20,000 unlabeled, 10 unfeatured rows): build it and
   compile its training step (cold compile), build a second instance and
   compile again (cached compile: the modules are now in the cache), then
   run one warm-up epoch and ``--epochs`` timed epochs of the original's
   schedule (batch 10,000 from every source, 4 steps an epoch, wrap-around
   index batches) and read the peak RSS of that model's phase.
3. The GEMM floor: the matrix-multiply FLOPs of one epoch, from the layer
   shapes and the passes each source makes (forward; backward weight and
   input gradients where the graph needs them), each product timed with
   NumPy float32 in every equivalent orientation (A@B, A.T@B, ..., and the
   transposed product), the best time per shape kept. ``floor_s`` is the sum
   of those best times over one epoch's products; ``ratio`` = epoch / floor.
   ``run_floor_s`` / ``run_ratio``: the same for the products the step runs
   (untapped decodes each distinct unfeatured pair once, so its unfeatured
   decoder products have 10 rows, not 10,000).

Cold compile: untapped is compiled first into the empty cache; M2's "cold"
compile follows in the same cache and reuses the C modules the two graphs
share, so it is reported but only untapped's is a true cold figure.
"""

import argparse
import atexit
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

_CACHE = None


def use_empty_compile_cache():
    """Point PyTensor at a fresh, empty compile cache; call before PyTensor is imported.

    The folder is removed at exit, after PyTensor's own exit handler (which is
    registered later, so runs earlier).
    """
    global _CACHE
    if "pytensor" in sys.modules:
        raise RuntimeError("the compile cache must be chosen before PyTensor is imported")
    _CACHE = tempfile.mkdtemp(prefix="untapped-bench-cache-")
    atexit.register(
        lambda: None if os.environ.get("UNTAPPED_BENCH_KEEP_CACHE") else shutil.rmtree(_CACHE, ignore_errors=True)
    )
    os.environ["PYTENSOR_FLAGS"] = ",".join(
        f for f in (os.environ.get("PYTENSOR_FLAGS", ""), f"base_compiledir={_CACHE}") if f
    )

if __name__ == "__main__":
    use_empty_compile_cache()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import untapped  # noqa: E402

untapped.configure_threads()  # before NumPy loads, so that the settings reach its OpenBLAS

import numpy as np  # noqa: E402

from untapped.presets import MODES  # noqa: E402

SIZES = dict(labeled=35735, unlabeled=20000, unfeatured=10)
BATCH = 10000
N_FEATURES, N_CLASSES, N_LATENT = 784, 10, 2


# ---------------------------------------------------------------------------
# Synthetic data and the schedule


def synthetic_data(seed=0):
    rng = np.random.default_rng(seed)
    corners = (
        np.full((N_CLASSES, N_CLASSES), 0.05 / 9, np.float32)
        + np.eye(N_CLASSES, dtype=np.float32) * (0.95 - 0.05 / 9)
    )
    return dict(
        labeled_x=(rng.random((SIZES["labeled"], N_FEATURES), dtype=np.float32) < 0.13).astype(np.float32),
        labeled_y=np.eye(N_CLASSES, dtype=np.float32)[rng.integers(0, N_CLASSES, SIZES["labeled"])],
        unlabeled_x=(rng.random((SIZES["unlabeled"], N_FEATURES), dtype=np.float32) < 0.13).astype(np.float32),
        unfeatured_y=corners,
        unfeatured_z=rng.uniform(-1.5, 1.5, (SIZES["unfeatured"], N_LATENT)).astype(np.float32),
    )


def epoch_indices(rng):
    """The original's epoch: per-source permutations, wrap-around batches of 10,000, 4 steps."""
    perms = {s: rng.permutation(n) for s, n in SIZES.items()}
    steps = max(-(-n // BATCH) for n in SIZES.values())
    return [
        {s: perms[s][(i * BATCH + np.arange(BATCH)) % len(perms[s])] for s in SIZES}
        for i in range(steps)
    ]


# ---------------------------------------------------------------------------
# GEMM floor


def layer_products(
    preset, hidden=dict(classifier=(50, 50), encoder=(10, 10), decoder=(250, 500)), unfeatured_decoder_rows=BATCH
):
    """(M, K, N) of every matrix product of one training step, forward and backward.

    A dense layer ``Y = X W`` on B rows costs ``X W`` (B, in, out) forward,
    ``X.T dY`` (in, B, out) for the weight gradient, and ``dY W.T``
    (B, out, in) for the input gradient when the input depends on parameters
    (not for data, nor for the Bernoulli sample x^, which carries no gradient).
    The encoder's two heads (mean, std) are separate layers.

    By default every source counts a full batch of rows: the floor of the
    schedule, which the issue's ratio is defined against. The untapped step
    itself runs its unfeatured decoder pass on the distinct (y, z) pairs of
    the batch (10 here), so ~125 of the ~398 GFLOP an epoch counted that way
    are multiplied on 10 rows; ``unfeatured_decoder_rows=10`` counts the
    products the step actually runs.
    """
    nets = {
        "classifier": [N_FEATURES, *hidden["classifier"], [N_CLASSES]],
        "encoder": [N_FEATURES + N_CLASSES, *hidden["encoder"], [N_LATENT, N_LATENT]],
        "decoder": [N_CLASSES + N_LATENT, *hidden["decoder"], [N_FEATURES]],
    }
    # (source, network, does its input need a gradient) for each pass: the
    # labeled decoder's z comes from the encoder; the unlabeled passes sample
    # y~ and z
    passes = [
        ("labeled", "classifier", False), ("labeled", "encoder", False), ("labeled", "decoder", True),
        ("unlabeled", "classifier", False), ("unlabeled", "encoder", True), ("unlabeled", "decoder", True),
    ]  # fmt: skip
    if preset == "untapped":
        # observed (y, z); x^ has no gradient
        passes += [("unfeatured", "decoder", False), ("unfeatured", "classifier", False)]
    products = []
    for source, net, input_grad in passes:
        rows = unfeatured_decoder_rows if (source, net) == ("unfeatured", "decoder") else BATCH
        widths = nets[net]
        for i in range(len(widths) - 1):
            fan_in = widths[i]
            outs = widths[i + 1] if isinstance(widths[i + 1], list) else [widths[i + 1]]
            for fan_out in outs:
                products.append((rows, fan_in, fan_out))  # forward
                products.append((fan_in, rows, fan_out))  # weight gradient
                if i > 0 or input_grad:
                    products.append((rows, fan_out, fan_in))  # input gradient
    return products


def best_gemm_time(m, k, n, repeats=5):
    """Best float32 time NumPy reaches for an (m, k) x (k, n) product, over every equivalent orientation."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    variants = [
        lambda: a @ b, lambda: at.T @ b, lambda: a @ bt.T, lambda: at.T @ bt.T,
        lambda: bt @ at, lambda: b.T @ at, lambda: bt @ a.T, lambda: b.T @ a.T,
    ]  # fmt: skip
    best = np.inf
    for f in variants:
        f()
        for _ in range(repeats):
            t = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t)
    return best


def gemm_floor(presets, steps):
    """Each model's floor (``floor_s``, the schedule's products) and ``run_floor_s`` (the products its step runs)."""
    per_model = {
        preset: dict(
            schedule=layer_products(preset), run=layer_products(preset, unfeatured_decoder_rows=SIZES["unfeatured"])
        )
        for preset in presets
    }
    shapes = {shape: None for counts in per_model.values() for products in counts.values() for shape in products}
    for p in shapes:
        shapes[p] = best_gemm_time(*p)
    out = {}
    for preset, counts in per_model.items():
        flops, run_flops = (steps * sum(2.0 * m * k * n for m, k, n in counts[c]) for c in ("schedule", "run"))
        floor, run_floor = (steps * sum(shapes[p] for p in counts[c]) for c in ("schedule", "run"))
        out[preset] = dict(
            gemm_flops=flops,
            floor_s=floor,
            floor_gflops=flops / floor / 1e9,
            run_gemm_flops=run_flops,
            run_floor_s=run_floor,
        )
    return out, {f"{m}x{k}x{n}": round(2.0 * m * k * n / t / 1e9, 1) for (m, k, n), t in shapes.items()}


# ---------------------------------------------------------------------------
# Memory


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark for this process (Linux >= 4.0), if allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _proc_field(path, key):
    """The text after ``key`` on the first line of ``path`` (a /proc file) that starts with it, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line[len(key):].strip()
    except OSError:
        pass
    return None


def peak_rss_mb():
    hwm = _proc_field("/proc/self/status", "VmHWM:")  # "<n> kB"
    if hwm is not None:
        return int(hwm.split()[0]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------
# One model


def bench_model(preset, data, epochs, mode, log):
    from untapped.model import SSDGM

    reset_peak_rss()

    def build():
        model = SSDGM.from_preset(preset, mode=mode, batch_size=BATCH)
        model.set_training_data(**data)
        t = time.perf_counter()
        model.graph.function("train")
        return model, time.perf_counter() - t

    _, cold = build()
    log(f"{preset}: cold compile {cold:.1f} s")
    model, warm = build()
    log(f"{preset}: cached compile {warm:.1f} s")

    rng = np.random.default_rng(1)
    times = []
    for epoch in range(epochs + 1):  # epoch 0 is a warm-up, not timed
        batches = epoch_indices(rng)
        t = time.perf_counter()
        for idx in batches:
            values = model.train_step(idx["labeled"], idx["unlabeled"], idx["unfeatured"], 0.01)
        dt = time.perf_counter() - t
        if not np.isfinite(values["total"]):
            raise RuntimeError(f"{preset}: non-finite total {values['total']}")
        if epoch:
            times.append(dt)
        log(f"{preset}: epoch {epoch}{' (warm-up)' if not epoch else ''} {dt:.2f} s, total {values['total']:.3f}")
    result = dict(
        epoch_s=statistics.median(times),
        epoch_min_s=min(times),
        epoch_max_s=max(times),
        epoch_times_s=times,
        steps_per_epoch=len(batches),
        compile_cold_s=cold,
        compile_warm_s=warm,
        peak_rss_mb=peak_rss_mb(),
    )
    # The training step keeps its buffers while it lives; free them before the next model's phase.
    del model
    gc.collect()
    return result


def environment(mode):
    from untapped import backend

    env = backend.environment(mode)
    env.update(
        machine=platform.machine(),
        processor=_cpu_name(),
        cores=os.cpu_count(),
        platform=platform.platform(),
        load_average_at_start=os.getloadavg(),
        numpy_blas=_numpy_blas(),
        compile_cache=_CACHE,
    )
    return env


def _cpu_name():
    name = _proc_field("/proc/cpuinfo", "model name")  # "\t: <name>"
    return name.lstrip("\t :") if name is not None else platform.processor()


def _numpy_blas():
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the figures to PATH")
    parser.add_argument(
        "--epochs", type=int, default=5, help="timed epochs per model (default 5; one warm-up epoch more)"
    )
    parser.add_argument("--models", default="untapped,m2", help="comma-separated presets (default untapped,m2)")
    parser.add_argument("--mode", default="c", choices=MODES, help="compile mode: c (default), plain or numba")
    parser.add_argument("--keep-cache", action="store_true", help="keep the temporary compile cache")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    presets = [p.strip() for p in args.models.split(",") if p.strip()]

    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", flush=True)

    if args.keep_cache:
        os.environ["UNTAPPED_BENCH_KEEP_CACHE"] = "1"
    env = environment(args.mode)
    log(f"load average {env['load_average_at_start']}, {env['cores']} cores, compile cache {_CACHE}")
    data = synthetic_data()
    results = {}
    for preset in presets:
        results[preset] = bench_model(preset, data, args.epochs, args.mode, log)
    log("timing NumPy float32 GEMM on the layer shapes")
    floors, rates = gemm_floor(presets, results[presets[0]]["steps_per_epoch"])
    for preset in presets:
        results[preset].update(floors[preset])
        results[preset]["ratio"] = results[preset]["epoch_s"] / results[preset]["floor_s"]
        results[preset]["run_ratio"] = results[preset]["epoch_s"] / results[preset]["run_floor_s"]
    env["gemm_gflops_by_shape"] = rates
    env["bench_wall_s"] = time.perf_counter() - start
    results["env"] = env

    print()
    header = (
        f"{'model':<9} {'epoch s (med)':>13} {'min':>6} {'max':>6} {'floor s':>8} {'ratio':>6} {'GFLOP':>6}"
        f" {'run ratio':>9} {'cold s':>7} {'cached s':>8} {'RSS MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for preset in presets:
        r = results[preset]
        print(
            f"{preset:<9} {r['epoch_s']:13.2f} {r['epoch_min_s']:6.2f} {r['epoch_max_s']:6.2f} {r['floor_s']:8.2f} "
            f"{r['ratio']:6.2f} {r['gemm_flops'] / 1e9:6.0f} {r['run_ratio']:9.2f} {r['compile_cold_s']:7.1f}"
            f" {r['compile_warm_s']:8.1f} {r['peak_rss_mb']:7.0f}"
        )
    print(
        "\nratio = epoch / floor of the schedule's products (the issue's target); run ratio = epoch / floor of\n"
        "the products the step runs (untapped decodes each distinct unfeatured pair once)"
    )
    print("\nfloor GEMM rates (GFLOP/s): " + ", ".join(f"{p} {results[p]['floor_gflops']:.0f}" for p in presets))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=float)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
