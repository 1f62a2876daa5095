"""What a run records of where it ran: the source commit, and the versions, compile mode, threads and data."""

import os
import pathlib
import subprocess
import sys

import untapped
from untapped.backend import environment
from untapped.presets import DEFAULT_MODE


def source_commit():
    """The git commit of the untapped source tree (``+dirty`` with uncommitted changes), or None."""
    where = pathlib.Path(untapped.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def describe_environment(mode=DEFAULT_MODE, location=None):
    """Lines describing versions, compile mode, BLAS, threads and the data source."""
    import pytensor

    env = environment(mode)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        f"untapped {untapped.__version__}, python {env['python']} ({sys.executable})",
        f"versions: {versions}",
        (
            f"mode: {env['mode']} (linker {env['linker']}, floatX {env['floatX']}, "
            f"compiledir {pytensor.config.compiledir})"
        ),
        f"blas__ldflags: {env['blas__ldflags'] or '(empty: PyTensor calls NumPy BLAS)'}",
        f"C flags: {env['cxxflags']}; vector math: {', '.join(env['vector_math'] or []) or 'none (scalar expf/logf)'}",
    ]
    try:
        from threadpoolctl import threadpool_info

        pools = "; ".join(
            f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)" for p in threadpool_info()
        )
    except Exception:  # threadpoolctl is optional
        pools = "unknown"
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    threads = {k: os.environ.get(k, "unset") for k in names}
    lines.append(
        f"threads: {os.cpu_count()} CPUs (untapped's row ops use OpenMP), "
        + ", ".join(f"{k}={v}" for k, v in threads.items())
        + f"; thread pools: {pools or 'none loaded'}"
    )
    if location is not None:
        kind = "mnist.pkl.gz" if pathlib.Path(location).is_file() else "IDX files"
        lines.append(f"data: {location} ({kind})")
    return lines
