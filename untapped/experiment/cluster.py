"""A study's trials on a Dask cluster (``run_mnist.py --backend dask``, ``--scheduler ADDRESS``).

Each run is one ``dask.distributed`` task (:func:`_trial`). It writes its
files to its own folder under ``--out`` as a local run does, so every worker
must reach ``--out`` (and the MNIST folder) at the same absolute path. A
task, first or repeated, plans its run again from what the folder holds
(:func:`untapped.experiment.plan.continue_runs`): so when a worker is lost in the
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

Reaching the scheduler, or starting a local cluster, is
:mod:`untapped.experiment.scheduler`'s.
"""

import dataclasses
import os
import pathlib
import sys
import time
import uuid

from untapped.experiment.folder import finished_result
from untapped.experiment.plan import continue_runs
from untapped.experiment.scheduler import RESOURCE, ClusterError, connect
from untapped.experiment.trial import run_trial
from untapped.files import one_line, same_file

#: How often a trial that raised is tried again (Dask's ``retries=``).
RETRIES = 2
#: The topic of the workers' trial events (``Worker.log_event``), which the client reads for its progress lines.
TOPIC = "untapped-trials"
#: Seconds between the client's looks at its trials.
POLL_SECONDS = 0.5


class TrialError(Exception):
    """A trial failed on a worker; the message names the run and the worker."""


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
    again by :func:`untapped.experiment.plan.continue_runs`: after a lost worker
    it resumes from the checkpoint that worker wrote, or is ``done`` if it
    finished. ``overwrite`` is dropped because the client applied it before
    submitting; here it would delete the lost attempt's checkpoint. A run
    continuing a checkpoint elsewhere (``--resume`` with another ``--out``)
    continues its own checkpoint once an attempt wrote one (without
    ``--overwrite`` no checkpoint was there before).
    """
    own = spec.path("checkpoint")
    if spec.resume is None or same_file(spec.resume, own):
        return continue_runs([dataclasses.replace(spec, resume=None, overwrite=False)])[0]
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
            return finished_result(spec)
        threads = trial_threads(worker.state.nthreads, worker.state.total_resources)
        # The nanny starts workers with OMP_NUM_THREADS=1; libgomp reads it when PyTensor's compiled ops
        # first load it (in this trial), threadpoolctl only limits the libraries loaded already (OpenBLAS).
        os.environ["OMP_NUM_THREADS"] = str(threads)
        with threadpool_limits(limits=threads):
            return run_trial(spec, classifier)
    except Exception as exc:
        raise TrialError(f"{spec.name} failed on {worker.address}: {type(exc).__name__}: {one_line(exc)}") from None


# ---------------------------------------------------------------- on the client



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
    read from its ``metrics.json``, as in :func:`untapped.experiment.trials.run_trials`.
    ``classifier`` (the digit classifier) is sent with each task; without it
    each worker loads or fits its own (cached). ``echo`` receives one line per
    trial event, with the study's progress (runs done, running, left).

    Raises :class:`ClusterError` once every trial has ended if any failed;
    the finished runs' files are kept, so the same command continues the study.
    """
    results = {i: finished_result(spec) for i, spec in enumerate(specs) if spec.done}
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
                f"lost the Dask scheduler ({one_line(exc)}); the finished runs are kept, "
                "the same command continues the study"
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
            how = (
                "finished earlier" if msg["done"] else ("resuming from " + msg["resume"] if msg["resume"] else "fresh")
            )
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
