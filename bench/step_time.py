"""Median training-step time of untapped and M2, for comparing two commits.

``python bench/step_time.py [--epochs 7] [--json out.json]`` builds each model
at batch 10,000 on ``epoch_time.py``'s synthetic data, compiles its training
step (in PyTensor's usual compile cache, so a second run compiles from
cache), and times every step of ``--epochs`` epochs of the original's
schedule; it prints the median of the steps after the first epoch's four,
in wall time and in the process's CPU time (all its threads).

``epoch_time.py`` times whole epochs and the compiles, but a few epochs in a
run make its median move with the host's speed; this script's median over
~20 steps a model is steadier. To compare two commits, run it from each
checkout in turn, A B A B ..., and compare the medians pair by pair. On a
machine other work shares, the CPU time a step takes moves much less than
its wall time (which also counts the time its threads wait for a core).

``--profile`` compiles each step with PyTensor's profiler and prints its
summary (time by op class, op and node, over all the steps run, the first
epoch's included) after the model's steps: where the step's time goes
outside the matrix products (``docs/speed.md``, *The step's non-GEMM part*).
"""

import argparse
import json
import os
import statistics
import sys
import time

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import untapped  # noqa: E402

untapped.configure_threads()  # before NumPy loads, so that the settings reach its OpenBLAS

import numpy as np  # noqa: E402

from bench.epoch_time import BATCH, epoch_indices, synthetic_data  # noqa: E402


def step_times(preset, data, epochs, profile=False):
    """(wall, CPU) seconds of each training step over ``epochs`` epochs, the first epoch included;
    with ``profile``, the step is compiled with PyTensor's profiler and its summary printed after them."""
    import pytensor

    from untapped.model import SSDGM

    model = SSDGM.from_preset(preset, batch_size=BATCH)
    model.set_training_data(**data)
    with pytensor.config.change_flags(profile=profile):
        train = model.graph.function("train")
    if profile:
        train.profile.message = f"{preset} training step"
    rng = np.random.default_rng(1)
    times = []
    for _ in range(epochs):
        for idx in epoch_indices(rng):
            t, c = time.perf_counter(), time.process_time()
            model.train_step(idx["labeled"], idx["unlabeled"], idx["unfeatured"], 0.01)
            times.append((time.perf_counter() - t, time.process_time() - c))
    if profile:
        train.profile.summary(file=sys.stdout, n_ops_to_print=40, n_apply_to_print=40)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=7, help="epochs per model, the first not counted (default 7)")
    parser.add_argument("--models", default="untapped,m2", help="comma-separated presets (default untapped,m2)")
    parser.add_argument("--json", metavar="PATH", help="write the step times to PATH")
    parser.add_argument("--profile", action="store_true", help="print PyTensor's profile of each model's step")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not counted)")
    data = synthetic_data()
    results = {}
    for preset in (p.strip() for p in args.models.split(",") if p.strip()):
        times = step_times(preset, data, args.epochs, args.profile)
        counted, cpu = zip(*times[len(times) // args.epochs:])
        results[preset] = dict(
            step_s=statistics.median(counted), step_min_s=min(counted), step_max_s=max(counted), steps=len(counted),
            step_cpu_s=statistics.median(cpu), step_cpu_min_s=min(cpu), step_cpu_max_s=max(cpu),
        )
        print(f"{preset}: median step {results[preset]['step_s']:.3f} s over {len(counted)} steps "
              f"(min {min(counted):.3f}, max {max(counted):.3f}); CPU {results[preset]['step_cpu_s']:.3f} s "
              f"(min {min(cpu):.3f}, max {max(cpu):.3f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
