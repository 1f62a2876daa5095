"""A study's trials on a Dask cluster (``run_mnist.py --backend dask``, ``--scheduler ADDRESS``).

Each run is one ``dask.distributed`` task (:func:`_trial`). It writes its
files to its own folder under ``--out`` as a local run does, so every worker
must reach ``--out`` (and the MNIST folder) at the same absolute path. A
task, first or repeated, plans its run again from what the folder holds
(:func:`untapped.experiment.continue_runs`): so when a worker is lost in the
middle of a trial, the scheduler gives the task to another worker, which
resumes from the last checkpoint the lost one wrote (training is
deterministic, so the result is bit-identical), and a run that finished
meanwhile is not run again. The scheduler repeats a task whose worker died
up to ``distributed.scheduler.allowed-failures`` times (3 by default); a
task that raises is repeated :data:`RETRIES` times (Dask's ``retries=``),
for failures that another attempt or worker may not meet (a network file
system that was briefly away).

A trial uses as many OpenBLAS / OpenMP threads as its worker's threads,
shared among the trials the worker runs at once: one trial per worker
thread, unless the workers declare the resource :data:`RESOURCE` (``dask
worker --nthreads 8 --resources trial=1`` runs one trial at a time on 8
threads; once any worker declares it, trials go only to workers that do).

Dask is an optional dependency (``pip install -e .[dask]``); this module
imports it only inside its functions, and :func:`require_dask` turns its
absence into a one-line :class:`untapped.experiment.ExperimentError`.
"""

import contextlib
import dataclasses
import os
import pathlib
import sys
import time
import uuid

from untapped import experiment
from untapped.files import one_line, same_file

#: How often a trial that raised is tried again (Dask's ``retries=``).
RETRIES = 2
#: A worker resource that limits the trials a worker runs at once (``--resources trial=1``).
RESOURCE = "trial"
#: The topic of the workers' trial events (``Worker.log_event``), which the client reads for its progress lines.
TOPIC = "untapped-trials"
#: Memory a run may take at batch 10,000 (its peak RSS: ``docs/speed.md``, *Memory*); sizes the local cluster.
TRIAL_MEMORY = 1.5e9
#: Seconds to wait for the scheduler to answer, the handshake included (:func:`probe`).
CONNECT_SECONDS = 10.0
#: Seconds between the client's looks at its trials.
POLL_SECONDS = 0.5

MISSING = "--backend dask needs Dask, an optional extra: pip install -e '.[dask]' (or pip install -r requirements-dask.txt)"


class ClusterError(experiment.ExperimentError):
    """The scheduler cannot be reached, or trials failed on the cluster; one-line message."""


class TrialError(Exception):
    """A trial failed on a worker; the message names the run and the worker."""


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
        raise ClusterError(f"{scheduler!r} is not a Dask scheduler address like tcp://host:8786 ({one_line(exc)})") from None
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


# ---------------------------------------------------------------- on a worker


def trial_threads(nthreads, resources):
    """OpenBLAS / OpenMP threads of one trial on a worker of ``nthreads`` threads and ``resources``.

    The worker's threads shared among the trials it runs at once: as many as
    its threads, or its :data:`RESOURCE` slots if it declares fewer.
    """
    slots = resources.get(RESOURCE)
    at_once = max(1, min(nthreads, int(slots))) if slots else nthreads
    return max(1, nthreads // at_once)


def _replan(spec):
    """``spec`` as the task must run it now, from what the run's folder holds.

    A study's run (fresh, or resuming from its own checkpoint) is planned
    again by :func:`untapped.experiment.continue_runs`: after a lost worker
    it resumes from the checkpoint that worker wrote, or is ``done`` if it
    finished. ``overwrite`` is dropped because the client applied it before
    submitting; here it would delete the lost attempt's checkpoint. A run
    continuing a checkpoint elsewhere (``--resume`` with another ``--out``)
    continues its own checkpoint once an attempt wrote one (without
    ``--overwrite`` no checkpoint was there before).
    """
    own = spec.path("checkpoint")
    if spec.resume is None or same_file(spec.resume, own):
        return experiment.continue_runs([dataclasses.replace(spec, resume=None, overwrite=False)])[0]
    if own.exists() and not spec.overwrite:
        return dataclasses.replace(spec, resume=str(own))
    return spec


def _trial(spec, classifier, study):
    """One run on a Dask worker: plan it again, set its threads, train and judge it; its result.

    Posts a ``started`` event (:data:`TOPIC`) with the run, the worker, its
    process id and whether the run resumes, for the client's progress.
    Any failure is raised as a :class:`TrialError` naming the run and the worker.
    """
    import distributed
    from threadpoolctl import threadpool_limits

    worker = distributed.get_worker()
    try:
        spec = _replan(spec)
        worker.log_event(TOPIC, dict(
            study=study, run=spec.name, event="started", worker=worker.address, pid=os.getpid(),
            resume=spec.resume, done=spec.done,
        ))
        if spec.done:
            return experiment.finished_result(spec)
        threads = trial_threads(worker.state.nthreads, worker.state.total_resources)
        # The nanny starts workers with OMP_NUM_THREADS=1; libgomp reads it when PyTensor's compiled ops
        # first load it (in this trial), threadpoolctl only limits the libraries loaded already (OpenBLAS).
        os.environ["OMP_NUM_THREADS"] = str(threads)
        with threadpool_limits(limits=threads):
            return experiment.run_trial(spec, classifier)
    except Exception as exc:
        raise TrialError(f"{spec.name} failed on {worker.address}: {type(exc).__name__}: {one_line(exc)}") from None


# ---------------------------------------------------------------- on the client


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


def _describe(client):
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sum(w["nthreads"] for w in workers)
    slots = [w.get("resources", {}).get(RESOURCE) for w in workers]
    line = f"dask: scheduler {client.scheduler.address}, {len(workers)} worker(s), {threads} thread(s)"
    if not workers:
        line += "; waiting for workers to join"
    return line, any(slots)


def _absolute(spec):
    """``spec`` with absolute paths: a worker does not run in the client's folder."""
    def absolute(path):
        return None if path is None else str(pathlib.Path(path).resolve())

    return dataclasses.replace(
        spec, out=absolute(spec.out), data_dir=absolute(spec.data_dir), resume=absolute(spec.resume),
        progress=False, echo=False,
    )


def run_trials(specs, scheduler=None, classifier=None, echo=print):
    """Run every spec as a Dask task; the results in the order of ``specs``.

    ``scheduler`` is the address of a running scheduler (``tcp://host:8786``);
    None starts a local cluster (:func:`connect`). A spec marked ``done`` is
    read from its ``metrics.json``, as in :func:`untapped.experiment.run_trials`.
    ``classifier`` (the digit classifier) is sent with each task; without it
    each worker loads or fits its own (cached). ``echo`` receives one line per
    trial event, with the study's progress (runs done, running, left).

    Raises :class:`ClusterError` once every trial has ended if any failed;
    the finished runs' files are kept, so the same command continues the study.
    """
    results = {i: experiment.finished_result(spec) for i, spec in enumerate(specs) if spec.done}
    todo = {i: _absolute(spec) for i, spec in enumerate(specs) if not spec.done}
    if not todo:
        return [results[i] for i in range(len(specs))]
    study = uuid.uuid4().hex
    with connect(scheduler, len(todo)) as client:
        line, limited = _describe(client)
        echo(line)
        futures = {
            client.submit(
                _trial, spec, classifier, study, key=f"trial-{spec.name}-{study[:8]}", pure=False,
                retries=RETRIES, resources={RESOURCE: 1} if limited else None,
            ): i
            for i, spec in todo.items()
        }
        progress = _Progress({i: spec.name for i, spec in todo.items()}, len(results), echo)
        failed = []
        try:
            while futures:
                time.sleep(POLL_SECONDS)
                # Ended trials first: a worker's next trial may have started since, on the thread just freed.
                ended = [f for f in futures if f.done()]
                for future in ended:
                    i = futures.pop(future)
                    if future.status == "finished":
                        results[i] = future.result()
                        progress.finished(i, results[i])
                    else:
                        failed.append(_failure(future, todo[i].name))
                        progress.failure(i, failed[-1])
                progress.events(client.get_events(TOPIC), study)
        except OSError as exc:  # distributed's CommClosedError: the scheduler went away
            raise ClusterError(
                f"lost the Dask scheduler ({one_line(exc)}); the finished runs are kept, the same command continues the study"
            ) from None
        except KeyboardInterrupt:
            client.cancel(list(futures))
            print("dask: cancelled the trials not started; trials running on a cluster finish there "
                  "(Dask cannot stop a running task)", file=sys.stderr)
            raise
    if failed:
        raise ClusterError(
            f"{len(failed)} of {len(todo)} run(s) failed; {failed[0]}; the finished runs are kept, "
            "the same command continues the study"
        )
    return [results[i] for i in range(len(specs))]


def _failure(future, name):
    """One line on why the task of run ``name`` failed."""
    try:
        exc = future.exception()
    except Exception as gone:  # cancelled: the scheduler forgot the task (it restarted)
        exc = gone
    if exc is None:  # no error recorded: the scheduler lost the task (it died or restarted)
        return f"{name}: the scheduler lost the task (its state: {future.status})"
    return one_line(exc) if isinstance(exc, TrialError) else f"{name}: {type(exc).__name__}: {one_line(exc)}"


class _Progress:
    """The client's progress lines: each trial event, with the runs done, running and left."""

    def __init__(self, names, done, echo):
        self.names = names
        self.done = done
        self.failed = 0
        self.total = done + len(names)
        self.running = set()
        self.attempts = {}  # run name -> times it started: more than once after a lost worker or an error
        self.ended = set()
        self.seen = set()
        self.echo = echo

    def _line(self, text):
        left = self.total - self.done - self.failed - len(self.running)
        failed = f", {self.failed} failed" if self.failed else ""
        self.echo(f"[{self.done}/{self.total} done, {len(self.running)} running, {left} left{failed}] {text}")

    def events(self, events, study):
        """Report the ``started`` events of ``study`` not seen yet."""
        for stamp, msg in events:
            key = (stamp, msg.get("run"), msg.get("pid"))
            if msg.get("study") != study or msg.get("event") != "started" or key in self.seen:
                continue
            self.seen.add(key)
            name = msg["run"]
            if name in self.ended:
                continue
            self.running.add(name)
            self.attempts[name] = self.attempts.get(name, 0) + 1
            again = f" again (attempt {self.attempts[name]})" if self.attempts[name] > 1 else ""
            how = "finished earlier" if msg["done"] else ("resuming from " + msg["resume"] if msg["resume"] else "fresh")
            self._line(f"{name} started{again} on {msg['worker']}: {how}")

    def finished(self, i, result):
        name = self._end(i)
        self.done += 1
        if result["status"] == "ok":
            self._line(f"{name} finished: cross-entropy on 5-9 {result['cross_entropy']:.4f}")
        else:
            self._line(f"{name} {result['status']}: {one_line(result['message'])}")

    def failure(self, i, message):
        self._end(i)
        self.failed += 1
        self._line(f"failed: {message}")

    def _end(self, i):
        name = self.names[i]
        self.running.discard(name)
        self.ended.add(name)
        return name
