"""Ours against the peers, alternated in one run: ``python bench/peers/compare.py [--out peers.md]``.

Runs ``run.py`` (one process each) for untapped's step (``ours``, the epoch of
``bench/epoch_time.py``), the JAX peer (one ``jax.jit``), PyTorch eager and
``torch.compile``, in turn (A B C D, A B C D, ...), ``--rounds`` times, in
each setting of the environment:

- the machine's environment as it is;
- ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset, for the benchmark's
  processes only (OpenBLAS then picks its kernels for the CPU it finds);
  when the machine sets neither, this is the first setting, run once;
- ``OPENBLAS_CORETYPE=Haswell`` (``--no-haswell`` leaves it out): OpenBLAS's
  AVX2 kernels on a CPU that has AVX-512.

Each cell of the table is an epoch (the median of ``--epochs`` timed epochs
after a warm-up one) per round, ``round 1 / round 2 / ...``. The table, with
the machine, the versions, the environment and which kernels OpenBLAS used in
each setting (threadpoolctl), is printed and written to ``--out``; ``--json``
keeps every figure. Needs the peers' packages: ``pip install -r
requirements-bench.txt -e '.[bench]'``.
"""

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
IMPLS = {
    "ours": "ours (`bench/epoch_time.py`)",
    "jax": "JAX jit",
    "torch": "PyTorch eager",
    "torch-compile": "PyTorch `torch.compile`",
}
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
               "MKL_NUM_THREADS", "XLA_FLAGS")  # fmt: skip
MODEL_NAMES = {"untapped": "untapped", "m2": "M2"}


def settings(haswell=True):
    """``[(label, environment, description)]``: the machine's, OpenBLAS's variables unset, Haswell kernels."""
    as_is = dict(os.environ)
    unset = {k: v for k, v in as_is.items() if k not in OPENBLAS_VARS}
    found = ", ".join(f"{k}={as_is[k]}" for k in OPENBLAS_VARS if k in as_is)
    if unset != as_is:
        out = [("as is", as_is, f"the machine's environment as it is ({found})"),
               ("unset", unset, f"{' and '.join(OPENBLAS_VARS)} unset for the benchmark's processes")]  # fmt: skip
    else:
        out = [("as is", as_is, f"the machine's environment as it is, which sets neither {' nor '.join(OPENBLAS_VARS)} "
                                "(so also the setting with them unset)")]  # fmt: skip
    if haswell:
        out.append(("Haswell", dict(unset, OPENBLAS_CORETYPE="Haswell"),
                    "OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE unset for the benchmark's processes"))  # fmt: skip
    return out


def missing_packages():
    return [m for m in ("jax", "torch", "threadpoolctl", "h5py") if importlib.util.find_spec(m) is None]


def run_once(impl, env, args, tmp, log):
    out = os.path.join(tmp, f"{impl}-{time.monotonic_ns()}.json")
    cmd = [sys.executable, os.path.join(HERE, "run.py"), impl, "--epochs", str(args.epochs), "--models", args.models,
           "--json", out]  # fmt: skip
    t = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"error: {impl} failed (exit {result.returncode}): {' '.join(cmd)}")
    log(f"{impl} done in {time.perf_counter() - t:.0f} s")
    with open(out) as f:
        return json.load(f)


def git_commit():
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        )
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def kernels(runs):
    """What each implementation's products ran on, from one process's record."""
    out = {}
    for impl, env in runs.items():
        blas = [p for p in env["threadpools"] if p["user_api"] == "blas"]
        numpys = [p for p in blas if "numpy" in (p.get("filepath") or "")] or blas
        openblas = ", ".join(sorted({f"OpenBLAS {p['version']}, {p['architecture']} kernels" for p in numpys})) or "-"
        if impl == "ours":
            out[impl] = f"NumPy's {openblas}"
        elif impl == "jax":
            out[impl] = "XLA's own CPU kernels, not OpenBLAS"
        else:
            out[impl] = (
                f"{env.get('torch_blas') or '?'} ({env.get('torch_cpu_capability')}), "
                f"{env.get('torch_threads')} threads"
            )
    return out


def table(results, setting_list, args, wall):
    """The markdown table and its caption."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    impls = list(results[setting_list[0][0]])
    first = results[setting_list[0][0]]
    envs = {impl: first[impl][0]["env"] for impl in impls}
    some = envs[impls[0]]
    versions = {"Python": some["python"], "NumPy": some["numpy"]}
    for impl in impls:
        versions.update(envs[impl]["versions"])
    lines = [
        f"Command: `python bench/peers/compare.py --rounds {args.rounds} --epochs {args.epochs}` "
        f"({datetime.date.today().isoformat()}, commit `{git_commit()}`, {wall / 60:.0f} min).",
        f"Machine: {some['cpu']}, {some['cores']} cores, {some['platform']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"Each cell: the median of {args.epochs} timed epochs (after a warm-up epoch) of the original's schedule "
        f"(4 steps of 10,000 rows a source), one per round, rounds `1 / 2{' / ...' if args.rounds > 2 else ''}`; "
        "the implementations alternated in each round, one process each; float32, every core.",
        "",
        "| epoch, s | " + " | ".join(IMPLS[i] for i in impls) + " |",
        "|---|" + "---|" * len(impls),
    ]
    for name, _, _ in setting_list:
        for model in models:
            cells = []
            for impl in impls:
                epochs = [r[model]["epoch_s"] for r in results[name][impl]]
                cells.append(" / ".join(f"{e:.2f}" for e in epochs))
            best = min(range(len(impls)), key=lambda i: min(r[model]["epoch_s"] for r in results[name][impls[i]]))
            cells[best] = f"**{cells[best]}**"
            lines.append(f"| {MODEL_NAMES.get(model, model)}, {name} | " + " | ".join(cells) + " |")
    lines += ["", "| first step, s (compile included), round 1 | " + " | ".join(IMPLS[i] for i in impls) + " |",
              "|---|" + "---|" * len(impls)]  # fmt: skip
    for name, _, note in setting_list[:1]:
        for model in models:
            lines.append(f"| {MODEL_NAMES.get(model, model)} | "
                         + " | ".join(f"{results[name][i][0][model]['first_step_s']:.1f}" for i in impls)
                         + " |")  # fmt: skip
    lines += ["", "Settings, and what the matrix products ran on in each (threadpoolctl, PyTorch's build):", ""]
    for name, env, note in setting_list:
        k = kernels({impl: results[name][impl][0]["env"] for impl in impls})
        lines.append(f"- *{name}*: {note}. " + "; ".join(f"{IMPLS[i]}: {k[i]}" for i in impls) + ".")
        for impl in impls:
            variables = {v: x for v, x in results[name][impl][0]["env"]["variables"].items() if v in THREAD_VARS and x}
            lines.append(f"  {IMPLS[impl]}'s process had the thread variables {variables or 'none'}.")
    lines.append("- Ours sets OMP_WAIT_POLICY=PASSIVE and OPENBLAS_THREAD_TIMEOUT=4 in its own process "
                 "(`untapped.configure_threads`, as `run_mnist.py` does) unless they are set; "
                 "the peers keep the setting's.")
    loads = [r["env"]["load_average_at_end"][0] for s in results.values() for runs in s.values() for r in runs]
    lines.append(f"- Load average (1 min) at the end of each process: {min(loads):.1f}-{max(loads):.1f}.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per process and model (one warm-up more)")
    parser.add_argument("--models", default="untapped,m2")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, of {', '.join(IMPLS)}")
    parser.add_argument("--no-haswell", action="store_true", help="leave out the OPENBLAS_CORETYPE=Haswell setting")
    parser.add_argument("--out", default="peers.md", help="where to write the table (default peers.md)")
    parser.add_argument("--json", metavar="PATH", help="write every figure to PATH")
    args = parser.parse_args(argv)
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown or not impls:
        parser.error(f"--impls: unknown {unknown}; choose from {', '.join(IMPLS)}")
    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be at least 1")
    missing = missing_packages()
    if missing:
        parser.exit(
            2, f"error: {', '.join(missing)} not installed: pip install -r requirements-bench.txt -e '.[bench]'\n"
        )

    start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    setting_list = settings(haswell=not args.no_haswell)
    results = {name: {impl: [] for impl in impls} for name, _, _ in setting_list}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, env, _ in setting_list:
                for impl in impls:
                    log(f"round {r + 1}, {name}: {impl}")
                    results[name][impl].append(run_once(impl, env, args, tmp, log))
    text = table(results, setting_list, args, time.perf_counter() - start)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
