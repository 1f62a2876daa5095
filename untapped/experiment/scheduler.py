"""Reaching Dask: the optional import, a scheduler's address answered within a deadline, a client of it or
of a local cluster.

What ``--backend dask`` and ``--scheduler ADDRESS`` need before a trial is
submitted (:mod:`untapped.experiment.cluster` submits them). Dask is an
optional dependency (``pip install -e .[dask]``); this module imports it only
inside its functions, and :func:`require_dask` turns its absence into a
one-line :class:`ClusterError`.
"""

import contextlib
import os
import time

from untapped.experiment.spec import ExperimentError
from untapped.files import one_line

#: A worker resource that limits the trials a worker runs at once (``--resources trial=1``).
RESOURCE = "trial"
#: Memory a run may take at batch 10,000 (its peak RSS: ``docs/speed.md``, *Memory*); sizes the local cluster.
TRIAL_MEMORY = 1.5e9
#: Seconds to wait for the scheduler to answer, the handshake included (:func:`probe`).
CONNECT_SECONDS = 10.0

MISSING = (
    "--backend dask needs Dask, an optional extra: pip install -e '.[dask]' (or pip install -r requirements-dask.txt)"
)


class ClusterError(ExperimentError):
    """The scheduler cannot be reached, or trials failed on the cluster; one-line message."""


def require_dask():
    """Raise :class:`ClusterError` (one line, how to install it) unless ``dask.distributed`` imports."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError(MISSING) from None


def check(scheduler=None, echo=None):
    """Raise :class:`ClusterError` (one line) unless Dask imports and, given its address, a scheduler answers there.

    For a command line to call before it fits or writes anything. ``echo``
    receives a line before the scheduler is tried and one when it answered.
    """
    require_dask()
    if scheduler:
        say = echo or (lambda line: None)
        say(f"dask: connecting to the scheduler at {scheduler} (waiting up to {CONNECT_SECONDS:.0f} s)")
        began = time.perf_counter()
        probe(scheduler)
        say(f"dask: the scheduler at {scheduler} answered in {time.perf_counter() - began:.1f} s")


def probe(scheduler, seconds=None):
    """Ask the server at address ``scheduler`` who it is, within ``seconds`` (:data:`CONNECT_SECONDS`) in all.

    ``distributed.Client`` bounds the TCP connection by its ``timeout`` but
    not the handshake that follows, so a port whose server accepts and never
    answers as Dask does (an HTTP server, a dashboard) would hold it for as
    long as that server keeps the connection. Here the connection, the
    handshake and an ``identity`` request share one deadline. Raises
    :class:`ClusterError` (one line) on an address that is not one, on no
    answer in time, and on an answer from something that is not a scheduler;
    no client exists yet, so nothing is left to close.
    """
    import asyncio

    from distributed.comm import connect as open_comm
    from distributed.comm.addressing import parse_address, parse_host_port

    seconds = CONNECT_SECONDS if seconds is None else seconds

    async def identity():
        protocol, location = parse_address(scheduler)
        if protocol in ("tcp", "tls"):
            # Dask retries a refused connection until its deadline; one plain
            # attempt first tells "nothing listens there" at once.
            _, writer = await asyncio.open_connection(*parse_host_port(location))
            writer.close()
        comm = await open_comm(scheduler, timeout=seconds)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        answer = asyncio.run(asyncio.wait_for(identity(), seconds))
    except (ValueError, TypeError) as exc:
        raise ClusterError(
            f"{scheduler!r} is not a Dask scheduler address like tcp://host:8786 ({one_line(exc)})"
        ) from None
    except TimeoutError:
        raise ClusterError(
            f"no Dask scheduler answered at {scheduler} within {seconds:.0f} s: something may hold the port without "
            "speaking Dask (the dashboard's port? a scheduler listens on 8786 by default)"
        ) from None
    except OSError as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({one_line(exc)})") from None
    except Exception as exc:  # a server that speaks another protocol: its bytes do not decode
        raise ClusterError(f"{scheduler} is not a Dask scheduler ({type(exc).__name__}: {one_line(exc)})") from None
    kind = answer.get("type") if isinstance(answer, dict) else None
    if kind != "Scheduler":
        raise ClusterError(f"{scheduler} is a Dask {kind or 'server'}, not a scheduler; give the scheduler's address")



def local_cluster_size(runs, cpus=None, memory=None):
    """``(workers, threads per worker)`` of a local cluster for ``runs`` runs on this machine.

    One worker per core, at most one per run and per :data:`TRIAL_MEMORY`
    of memory; each worker gets an equal share of the cores.
    """
    import psutil

    cpus = cpus or os.cpu_count() or 1
    memory = memory or psutil.virtual_memory().total
    workers = max(1, min(cpus, int(runs), int(memory // TRIAL_MEMORY)))
    return workers, max(1, cpus // workers)


@contextlib.contextmanager
def connect(scheduler=None, runs=1):
    """A ``distributed.Client`` of the scheduler at ``scheduler``, or of a new local cluster.

    The local cluster (:func:`local_cluster_size`, worker processes, each
    worker one :data:`RESOURCE`) is closed with the client.
    """
    require_dask()
    import logging

    import distributed

    if scheduler:
        probe(scheduler)  # bounded, and before any client exists: a bad address leaves nothing to close
        try:
            client = distributed.Client(scheduler, timeout=f"{CONNECT_SECONDS}s", set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {scheduler} ({one_line(exc)})") from None
        with client:
            yield client
        return
    workers, threads = local_cluster_size(runs)
    with kept_environment(), distributed.LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, resources={RESOURCE: 1},
        dashboard_address=":0", silence_logs=logging.ERROR,  # ":0": any free port, as others may run Dask here
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


@contextlib.contextmanager
def kept_environment():
    """Restore this process's environment variables afterwards.

    A local cluster's nannies run in this process and set ``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` to 1 in *its* environment
    (Dask's ``distributed.nanny.pre-spawn-environ``) before they start a
    worker; left there, they would reach every process started later, which
    would then run its row ops on one thread.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
