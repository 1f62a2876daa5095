"""One implementation's epochs in one process: ``python bench/peers/run.py IMPL [--json out.json]``.

IMPL is ``ours`` (untapped's compiled training step, as ``bench/epoch_time.py``
builds it), ``jax``, ``torch`` or ``torch-compile``. For each model it builds
the step on ``bench/epoch_time.py``'s synthetic sources from the same
initial weights (untapped's, seed 1234), runs one warm-up epoch and
``--epochs`` timed ones of the original's schedule (4 steps of 10,000 rows a
source), and reports the median epoch, the first step (which includes the
compile) and what the process ran on: versions, the thread pools
threadpoolctl finds (OpenBLAS's kernels among them) and the environment.
``compare.py`` runs this once per implementation, setting and round.
"""

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = ("ours", "jax", "torch", "torch-compile")
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
            "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "XLA_FLAGS")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("impl", choices=IMPLS)
    parser.add_argument("--models", default="untapped,m2")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per model (one warm-up epoch more)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {args.impl}: {msg}", file=sys.stderr, flush=True)

    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.dirname(HERE))
    if args.impl == "ours":
        import untapped

        untapped.configure_threads()  # before NumPy loads, as bench/epoch_time.py and run_mnist.py do
    import numpy as np
    from common import epoch_time_module, time_epochs

    et = epoch_time_module()
    data = et.synthetic_data()
    results = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        trainer = make_trainer(args.impl, model, data)
        results[model] = time_epochs(trainer.step, args.epochs, log, model)
        del trainer
    results["env"] = environment(args.impl, np)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return results


def make_trainer(impl, model, data):
    if impl == "ours":
        return OursTrainer(model, data)
    params = glorot_params()
    if impl == "jax":
        import peer_jax

        return peer_jax.Trainer(model, params, data)
    import peer_torch

    return peer_torch.Trainer(model, params, data, compiled=impl == "torch-compile")


def glorot_params(seed=1234):
    """The initial parameters as ``docs/reference_format.md`` §7.1 draws them (untapped's, bit for bit)."""
    import numpy as np
    from common import PARAM_SHAPES

    rng = np.random.RandomState(seed)
    params = {}
    for name, shape in PARAM_SHAPES.items():
        if name.endswith("/W") and name != "encoder/std/W":
            std = np.sqrt(2) * np.sqrt(2 / sum(shape))
            params[name] = rng.uniform(
                low=0.0 - np.sqrt(3) * std, high=0.0 + np.sqrt(3) * std, size=shape
            ).astype(np.float32)
        else:
            params[name] = np.zeros(shape, np.float32)
    return params


class OursTrainer:
    """untapped's training step, built and fed as ``bench/epoch_time.py`` builds and feeds it."""

    name = "ours"

    def __init__(self, model, data):
        from untapped.model import SSDGM

        et = sys.modules["epoch_time"]
        self.model = SSDGM.from_preset(model, batch_size=et.BATCH)
        self.model.set_training_data(**data)
        self.model.graph.function("train")

    def step(self, idx):
        return self.model.train_step(idx["labeled"], idx["unlabeled"], idx["unfeatured"], 0.01)["total"]


def environment(impl, np):
    from threadpoolctl import threadpool_info

    env = dict(
        impl=impl,
        python=platform.python_version(),
        numpy=np.__version__,
        cpu=_cpu_name(),
        cores=os.cpu_count(),
        platform=platform.platform(),
        load_average_at_end=os.getloadavg(),
        variables={k: os.environ.get(k) for k in ENV_VARS},
        threadpools=[
            {k: p.get(k) for k in ("user_api", "internal_api", "version", "architecture", "num_threads", "filepath")}
            for p in threadpool_info()
        ],
    )
    if impl == "ours":
        import pytensor

        env["versions"] = {"pytensor": pytensor.__version__}
    elif impl == "jax":
        import peer_jax

        env["versions"] = peer_jax.versions()
    else:
        import torch

        env["versions"] = {"torch": torch.__version__}
        env["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        env["torch_threads"] = torch.get_num_threads()
        env["torch_blas"] = _torch_blas(torch)
    return env


def _torch_blas(torch):
    for part in torch.__config__.show().replace(",", "\n").splitlines():
        if "BLAS_INFO" in part:
            return part.split("=", 1)[-1].strip()
    return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
