"""Train small full-size models and digest what they end with, to prove a refactor changed no bit.

``python tests/support/bit_identical.py --record`` (run at the commit *before* a
change) writes ``tests/data/bit_identical.json`` (:data:`RECORD`); ``tests/test_bit_identical.py``
runs the same training after the change and compares digest for digest.

Each configuration trains the paper's full-size networks (784-50-50-10,
794-10-10-2, 12-250-500-784) on 600 labeled and 400 unlabeled MNIST images
for nine steps of batch 200 (three epochs' worth) in the C mode, then evaluates the five terms.
The results depend on the thread count (the OpenMP row ops and OpenBLAS
split their work by thread), so each recording names the count it ran at,
fixed through ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` before NumPy loads,
and on OpenBLAS's kernels, fixed through ``OPENBLAS_CORETYPE`` (:data:`BLAS_KERNELS`).

They also depend on the NumPy release, which brings its own OpenBLAS:
PyTensor 3.0.7 on Python 3.11 and PyTensor 3.3.8 on Python 3.12 give the
same bits with NumPy 2.4.6, while NumPy 2.5.5 moves some last bits. So each
lock has its own recording (:func:`record_path`): ``bit_identical.json`` for
``requirements.txt``'s NumPy, ``bit_identical-numpy-<version>.json`` for another.

NumPy 2.5.5's bits also depend on the processor class (:data:`PER_PROCESSOR`), so
its recordings are one per class, ``bit_identical-numpy-2.5.5-avx512.json`` and
``-avx2.json``: with the same Haswell kernels, at the recorded commit and at
later ones alike, an AVX2-only processor ends every configuration with other
bits than an AVX-512 one, while the lock's recording holds on both. The cause
is not found; NumPy's own SIMD loops are not it (disabling its AVX2 loops on
the AVX2 processor moves no bit), which leaves the OpenBLAS it brings (0.3.34,
the lock's brings 0.3.31).
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys

#: The tests' folder, which holds the recordings (``data/``) and this package (``support/``).
TESTS = pathlib.Path(__file__).resolve().parents[1]
#: The OpenBLAS kernels the recordings were made with. OpenBLAS picks its
#: kernels by processor (AVX2's Haswell kernels, AVX-512's SkylakeX kernels,
#: ...), and they round the matrix products' sums differently, so a
#: recording holds for one set of kernels only. The Haswell kernels run on
#: every x86-64 processor with AVX2 (the variable means nothing elsewhere).
BLAS_KERNELS = {"OPENBLAS_CORETYPE": "Haswell"}
#: The NumPy of the lock, ``requirements.txt``, whose recording is ``bit_identical.json``.
LOCK_NUMPY = "2.4.6"


#: NumPy releases whose recordings hold for one processor class (:func:`processor_class`) only.
PER_PROCESSOR = frozenset({"2.5.5"})


def processor_class():
    """``avx512`` for a processor with AVX-512 (``avx512f``), ``avx2`` for one with AVX2 only, else ``other``."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "other"
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


def record_path(numpy_version, processor=None):
    """The recording of the training's digests with NumPy ``numpy_version`` (on ``processor``'s class, for the
    releases of :data:`PER_PROCESSOR`; by default this machine's)."""
    name = "bit_identical" if numpy_version == LOCK_NUMPY else f"bit_identical-numpy-{numpy_version}"
    if numpy_version in PER_PROCESSOR:
        name += f"-{processor or processor_class()}"
    return TESTS / "data" / f"{name}.json"


RECORD = record_path(importlib.metadata.version("numpy"))
THREAD_COUNTS = (1, 2)
#: The thread counts the suite checks (each a full-size compile of four graphs, ~2 min): one by
#: default, a count fixed whatever the machine's cores; ``UNTAPPED_BIT_IDENTICAL_THREADS=1,2`` for both.
TESTED_THREAD_COUNTS = tuple(int(t) for t in os.environ.get("UNTAPPED_BIT_IDENTICAL_THREADS", "1").split(","))

#: Estimator options of each configuration, beside the seed.
CONFIGS = {
    "untapped": dict(preset="untapped"),
    "m2": dict(preset="m2"),
    "eq17": dict(preset="untapped", reverse_elbo_variant="eq17"),
    "onehot-prior-z": dict(preset="untapped", unfeatured_z="prior", reverse_y_density="categorical", onehot=True),
}


def _split(mnist_dir, onehot):
    import numpy as np

    from untapped.data import load_split

    split = load_split(mnist_dir, download=False)
    rng = np.random.RandomState(0)
    labeled = rng.choice(len(split.labeled_x), 600, replace=False)
    unlabeled = rng.choice(len(split.unlabeled_x), 400, replace=False)
    unfeatured_y = np.eye(10, dtype=np.float32) if onehot else split.unfeatured_y
    arrays = dict(
        labeled_x=split.labeled_x[labeled],
        labeled_y=split.labeled_y[labeled],
        unlabeled_x=split.unlabeled_x[unlabeled],
        unfeatured_y=unfeatured_y,
        unfeatured_z=split.unfeatured_z,
    )
    return arrays


def digest(array):
    import numpy as np

    array = np.ascontiguousarray(array)
    return f"{array.dtype.str}{array.shape}:" + hashlib.sha256(array.tobytes()).hexdigest()[:32]


def train(name, mnist_dir):
    """Digests of the parameters, Adam's state and an evaluation after nine steps of ``CONFIGS[name]``."""
    import numpy as np

    from untapped.model import SSDGM

    options = dict(CONFIGS[name])
    preset, onehot = options.pop("preset"), options.pop("onehot", False)
    arrays = _split(mnist_dir, onehot)
    model = SSDGM.from_preset(preset, seed=4321, mode="c", **options)
    model.set_training_data(**arrays)
    rng = np.random.RandomState(5)
    sizes = {"labeled": 600, "unlabeled": 400, "unfeatured": len(arrays["unfeatured_y"])}
    totals = []
    for _ in range(9):  # three epochs of the 600 labeled rows
        index = {s: rng.randint(0, n, 200).astype("int64") for s, n in sizes.items()}
        out = model.train_step(index["labeled"], index["unlabeled"], index["unfeatured"], np.float32(0.01))
        totals.append(out["total"])
    tiled = np.arange(200) % len(arrays["unfeatured_y"])
    held = dict(
        labeled_x=arrays["labeled_x"][:200],
        labeled_y=arrays["labeled_y"][:200],
        unlabeled_x=arrays["unlabeled_x"][:200],
        unfeatured_y=arrays["unfeatured_y"][tiled],
        unfeatured_z=arrays["unfeatured_z"][tiled],
    )
    evaluation = model.evaluate(**held)
    result = {
        "params": {k: digest(v) for k, v in model.param_values_by_name().items()},
        "optimizer": {k: digest(v) for k, v in model.optimizer_state().items()},
        "evaluation": {k: v.hex() for k, v in evaluation.items()},
        "totals": [t.hex() for t in totals],
    }
    return result


def run_all(mnist_dir):
    return {name: train(name, mnist_dir) for name in CONFIGS}


def in_subprocess(threads, mnist_dir):
    """:func:`run_all` in a fresh interpreter with ``threads`` OpenMP / OpenBLAS threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), **BLAS_KERNELS)
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from support import bit_identical; "
        "print(json.dumps(bit_identical.run_all(sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(TESTS), str(mnist_dir)], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"training in a subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help=f"write {RECORD.relative_to(TESTS.parent)}")
    parser.add_argument(
        "--data-dir", default=os.environ.get("UNTAPPED_DATA_DIR", TESTS.parents[1] / "shared" / "data" / "mnist")
    )
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=TESTS, capture_output=True, text=True
    ).stdout.strip()
    recorded = {"commit": commit, "threads": {str(t): in_subprocess(t, args.data_dir) for t in THREAD_COUNTS}}
    text = json.dumps(recorded, indent=1, sort_keys=True) + "\n"
    if args.record:
        RECORD.parent.mkdir(exist_ok=True)
        RECORD.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
