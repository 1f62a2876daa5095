"""A study's runs as records: the run folders of a results folder, and the runs of earlier reports' ``study.json``.

:func:`load_study` reads every run folder of a results folder once
(``<model>[-<variant>]-seed<seed>/``): a finished run (its ``metrics.json``,
``config.json``, ``history.json``, ``log.txt``) becomes a record, a run
folder without a ``metrics.json`` is a run without a result (diverged or
unfinished), and what cannot be used (another tool's ``metrics.json``, a
damaged file: :mod:`untapped.study.run_metrics`) is left out with a note.
A run folder's ``machine.txt``, where one was written beside the run, names
the processor it ran on.
:func:`load_recorded` gives the runs an earlier report recorded, whose
folders are not read.
"""

import json
import math
import pathlib
import re
import time
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from untapped.evaluation.readings import DERIVED
from untapped.presets import group_name
from untapped.study.run_metrics import MetricsProblem, read_metrics

#: Training terms in plotting order, as ``history.json`` names them.
CURVE_TERMS = ("labeled_elbo", "unlabeled_elbo", "reverse_elbo", "x_to_y_loss", "y_to_x_loss", "total")
#: Files that mark a folder as an untapped run's, finished or not.
_RUN_MARKS = ("config.json", "checkpoint.h5")
#: The groups first in every table: the baseline, then the model it is compared with.
BASELINE = "m2"
REFERENCE = "untapped"


class ReportError(Exception):
    """The folder holds no finished run, or a file cannot be read or written; one-line message."""


def _read(path, what):
    """The JSON object in ``path`` ({} if there is none); :class:`MetricsProblem` (damaged) if it is not one."""
    try:
        value = json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise MetricsProblem(path.parent / "metrics.json", f"its {what} cannot be read: {' '.join(str(exc).split())}",
                             damaged=True) from None
    if not isinstance(value, dict):
        raise MetricsProblem(path.parent / "metrics.json", f"its {what} is not a JSON object", damaged=True)
    return value


#: A run folder's name: ``<model>[-<variant>]-seed<seed>``.
_RUN_NAME = re.compile(r"^(?P<model>[a-z0-9]+?)(?:-(?P<variant>.+))?-seed(?P<seed>\d+)$")
#: The first line of a run's ``log.txt``: ``untapped <version>: <run>, <YYYY-mm-dd HH:MM:SS>``.
_LOG_START = re.compile(r"^untapped \S+: \S+, (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
#: How the runs' timestamps are written (local time).
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def training_terms(history):
    """The last epoch's training terms (:data:`CURVE_TERMS`) from a run's history; None where a term is not trained."""
    return OrderedDict((t, float(history[f"train/{t}"][-1]) if history.get(f"train/{t}") else None)
                       for t in CURVE_TERMS)


def _derive_readings(readings):
    """Add the readings of :data:`untapped.evaluation.DERIVED` that a run's metrics predate, from its default."""
    derived = []
    default = readings.get("default")
    for name, derive in DERIVED.items():
        if name not in readings and default is not None:
            readings[name] = OrderedDict(cross_entropy=derive(default["cross_entropy"]), accuracy=default["accuracy"])
            derived.append(name)
    return derived


def _timestamps(run_dir):
    """When a run started (its log's first line) and finished (its metrics.json written), local time; None if
    unknown."""
    started = None
    try:
        with open(run_dir / "log.txt") as log:
            match = _LOG_START.match(log.readline())
        started = match.group(1) if match else None
    except OSError:
        pass
    try:
        finished = time.strftime(TIME_FORMAT, time.localtime((run_dir / "metrics.json").stat().st_mtime))
    except OSError:
        finished = None
    return started, finished


def _processor(run_dir):
    """The processor named by the ``processor:`` line of a run's ``machine.txt`` (up to a ``;``, after which the
    line may give the environment); None if there is none."""
    try:
        lines = (run_dir / "machine.txt").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    mark = "processor:"
    named = next((line[len(mark):].split(";")[0].strip() for line in lines if line.startswith(mark)), "")
    return named or None


def _series(history, key, path):
    """``history[key]`` as a float array; :class:`MetricsProblem` (damaged) unless it is a list of finite numbers."""
    values = history.get(key, [])
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise MetricsProblem(path, f"history.json's {key} is not a list of finite numbers", damaged=True)
    return np.asarray(values, dtype=float)


def _load_run(path):
    """One finished run from its ``metrics.json`` at ``path``, with its config and history; :class:`MetricsProblem`
    if unusable."""
    metrics = read_metrics(path)
    config = _read(path.parent / "config.json", "config.json")
    history = _read(path.parent / "history.json", "history.json")
    for key in ("seconds", *(f"train/{t}" for t in CURVE_TERMS)):
        _series(history, key, path)
    variant = metrics.get("variant", "code")
    recognised = [int(d) for d in metrics["recognised"]]
    readings = OrderedDict(
        (k, OrderedDict(cross_entropy=v["cross_entropy"], accuracy=v["accuracy"]))
        for k, v in metrics.get("readings", {}).items()
    )
    derived = _derive_readings(readings)
    started, finished = _timestamps(path.parent)
    return OrderedDict(
        run=path.parent.name,
        model=metrics["model"],
        variant=variant,
        group=group_name(metrics["model"], variant),
        seed=int(metrics["seed"]),
        epochs=int(metrics["epochs"]),
        cross_entropy=float(metrics["cross_entropy"]),
        accuracy=float(metrics["accuracy"]),
        recognised=recognised,
        distinct_digits=len(set(recognised)),
        readings=readings,
        readings_derived=derived,
        commit=metrics.get("commit"),
        command=metrics.get("command") or config.get("command"),
        train_seconds=float(np.sum(history.get("seconds", []))),
        training_terms=training_terms(history),
        started=started,
        finished=finished,
        processor=_processor(path.parent),
        source="run folder",
        history=history,
    )


def _run_without_result(run_dir):
    """The run of a folder without ``metrics.json``: ``diverged`` (its log says so) or ``unfinished``.

    Named by its ``config.json``, else by the folder's name; None when neither says which run it is.
    """
    try:
        config = _read(run_dir / "config.json", "config.json")
    except MetricsProblem:
        config = {}
    name = _RUN_NAME.match(run_dir.name)
    model = config.get("model") or (name.group("model") if name else None)
    seed = config["seed"] if "seed" in config else (name.group("seed") if name else None)
    if model is None or seed is None:
        return None
    variant = config.get("variant") or (name.group("variant") if name else None) or "code"
    status, message = "unfinished", None
    try:
        diverged = [line for line in (run_dir / "log.txt").read_text().splitlines() if line.startswith("diverged:")]
    except OSError:
        diverged = []
    if diverged:
        status, message = "diverged", diverged[-1][len("diverged:"):].strip()
    return OrderedDict(run=run_dir.name, model=model, variant=variant, group=group_name(model, variant),
                       seed=int(seed), status=status, message=message)


def _read_folder(folder):
    """``(finished, not_finished, notes)`` of ``folder``'s run folders, each read once.

    A folder with a ``metrics.json`` is a finished run (:func:`_load_run`), or
    left out with a note. A folder without one is a run without a result
    (:func:`_run_without_result`) if it is a run's: it holds ``config.json``
    or ``checkpoint.h5``, or is named as a run; these get one note together.
    """
    finished, not_finished, notes, unfinished = [], [], [], []
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        metrics = run_dir / "metrics.json"
        if metrics.exists():
            try:
                finished.append(_load_run(metrics))
            except MetricsProblem as exc:
                notes.append("left out " + " ".join(exc.said(metrics.relative_to(folder)).split()))
        elif any((run_dir / n).exists() for n in _RUN_MARKS) or _RUN_NAME.match(run_dir.name):
            unfinished.append(run_dir.name)
            run = _run_without_result(run_dir)
            if run is not None:
                not_finished.append(run)
    if unfinished:
        notes.append(f"left out {len(unfinished)} unfinished run(s), without metrics.json: {', '.join(unfinished)}")
    return finished, not_finished, notes


def load_recorded(path):
    """The runs of an earlier report's ``study.json``, as :func:`load_study` gives them.

    Their folders are not read: the training terms, curves and timestamps
    are missing (None), and the derived readings are added from the default.
    """
    path = pathlib.Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path} ({' '.join(str(exc).split())})") from None
    if not isinstance(record, dict) or not isinstance(record.get("runs"), list):
        raise ReportError(f"{path} is not a report's study.json (no runs list)")
    runs = []
    for r in record["runs"]:
        try:
            run = OrderedDict((k, r[k]) for k in ("run", "model", "variant", "group", "seed", "epochs", "cross_entropy",
                                                  "accuracy", "recognised", "distinct_digits"))
        except KeyError as exc:
            raise ReportError(f"{path}: a run without {exc}") from None
        readings = OrderedDict((k, OrderedDict(v)) for k, v in r.get("readings", {}).items())
        derived = sorted(set(_derive_readings(readings)) | set(r.get("readings_derived", [])))
        run.update(
            readings=readings,
            readings_derived=derived,
            commit=r.get("commit"),
            command=r.get("command"),
            train_seconds=float(r.get("train_seconds") or 0.0),
            training_terms=r.get("training_terms") or OrderedDict((t, None) for t in CURVE_TERMS),
            started=r.get("started"),
            finished=r.get("finished"),
            processor=r.get("processor"),
            source=f"{path.resolve().parent.name}/{path.name}",
            history={},
        )
        runs.append(run)
    return runs


class Study(NamedTuple):
    """What :func:`load_study` reads: the finished runs, the runs without a result, and the notes on what is left
    out."""

    runs: list
    not_finished: list
    notes: list


def load_study(folder, recorded=()):
    """Every finished run in ``folder`` and in the earlier ``study.json`` files ``recorded``, and what is left out.

    The runs are sorted by group and seed; a run (group and seed) found twice
    is an error: each run is reported once. ``not_finished`` are the run
    folders without a ``metrics.json`` (:func:`_run_without_result`). The
    ``notes`` (one line each) name what is left out: a ``metrics.json`` that
    is not an untapped run's or is damaged
    (:func:`untapped.study.run_metrics.check_metrics`, and the run's
    ``config.json`` and ``history.json`` must be JSON objects), the
    unfinished runs; whether the runs differ in length (:func:`length_notes`);
    and the seeds whose runs ran on different processors (:func:`processor_notes`).
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder} is not a folder")
    runs, not_finished, notes = _read_folder(folder)
    where = {(r["group"], r["seed"]): str(folder) for r in runs}
    for path in recorded:
        for r in load_recorded(path):
            key = (r["group"], r["seed"])
            if key in where:
                raise ReportError(f"{r['group']} seed {r['seed']} is both in {where[key]} and in {path}; "
                                  "a run is reported once, so leave one of them out")
            where[key] = str(path)
            runs.append(r)
    if not runs:
        raise ReportError(f"{folder} holds no finished run (no <run>/metrics.json)"
                          + (f"; {notes[0]}" if notes else ""))
    order = {g: i for i, g in enumerate([BASELINE, REFERENCE])}
    runs.sort(key=lambda r: (order.get(r["group"], 2), r["group"], r["seed"]))
    return Study(runs, not_finished, notes + length_notes(runs) + processor_notes(runs))


def groups(runs):
    return list(OrderedDict.fromkeys(r["group"] for r in runs))


def by_seed(runs, group, key="cross_entropy"):
    return {r["seed"]: r[key] for r in runs if r["group"] == group}


def length_notes(runs):
    """A line if the runs differ in their epochs (the tables then compare runs trained for different lengths)."""
    if len({r["epochs"] for r in runs}) <= 1:
        return []
    per_group = "; ".join(
        f"{g}: {', '.join(str(e) for e in sorted({r['epochs'] for r in runs if r['group'] == g}))}"
        for g in groups(runs)
    )
    return [f"the runs differ in length (epochs per group, {per_group}); the summaries and paired comparisons mix them"]


def processor_notes(runs):
    """A line per seed whose runs' ``machine.txt`` name different processors.

    Such a pair is kept as it is (docs/study-plan.md, third amendment): the
    report names it, since a 150-epoch run's last bits depend on the machine.
    """
    named = {}
    for r in runs:
        if r["processor"]:
            named.setdefault(r["seed"], []).append(r)
    lines = []
    for seed, mine in sorted(named.items()):
        if len({r["processor"] for r in mine}) > 1:
            where = "; ".join(f"{r['group']}: {r['processor']}" for r in mine)
            lines.append(f"seed {seed}'s runs ran on different processors ({where}); "
                         "they are kept and compared as they are")
    return lines
