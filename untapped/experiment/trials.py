"""Many runs: a command's runs one after another, in parallel or on a cluster, and their summary.

:func:`run_request` is the whole of ``run_mnist.py``'s default command: plan
the runs (:func:`untapped.experiment.plan_request`), read and check the data,
lock the output folder, fit or load the digit classifier, run every trial
(:func:`run_trials`) and write the summary (:func:`write_summary`:
``summary.json`` and ``summary.txt`` in the output folder, holding every
finished run there).
"""

import dataclasses
import pathlib
from collections import OrderedDict

import numpy as np

from untapped.experiment import cluster
from untapped.experiment.environment import describe_environment
from untapped.experiment.folder import (
    OutputError,
    finished_result,
    lock_folder,
    prepare_outputs,
    result_from_metrics,
    write_json,
)
from untapped.experiment.inputs import check_subset, data_location, digit_classifier, load_images
from untapped.experiment.plan import plan_request
from untapped.experiment.spec import RUN_FILES
from untapped.experiment.trial import run_trial
from untapped.files import one_line
from untapped.presets import DEFAULT_VARIANT, group_name
from untapped.study.run_metrics import MetricsProblem, read_metrics


def run_request(request, echo=print):
    """Run what ``request`` (a :class:`untapped.experiment.Request`) asks for; returns ``(results, table)``.

    ``echo`` receives the lines to show: what is kept or resumed, the
    environment, the output folder. ``results`` are the runs' results in
    order; ``table`` is :func:`summary_table` of every finished run in the
    output folder. Errors a user can cause are one-line exceptions
    (:class:`untapped.experiment.ExperimentError`,
    :class:`untapped.data.DataError`,
    :class:`untapped.checkpoint.CheckpointError`); Ctrl-C raises
    :class:`untapped.training.TrainingInterrupted` after saving.
    """
    specs, backend = plan_request(request, echo)
    if request.resume is None:
        _say_what_continues(specs, echo)
    out_dir = pathlib.Path(specs[0].out).parent
    location = data_location(specs[0].data_dir)
    for line in describe_environment(specs[0].mode, location):
        echo(line)
    images = load_images(str(location))  # read and verify the data before anything is written
    check_subset(specs[0].subset, images[1])
    with lock_folder(out_dir):  # one writer at a time
        prepare_outputs(specs)
        echo(f"output: {out_dir}  runs: {', '.join(s.name for s in specs)}")
        classifier = digit_classifier(str(location), specs[0].subset, images=images, say=echo)
        del images  # each run reads its own split
        shared = classifier if request.jobs == 1 or backend == "dask" else None
        results = run_trials(specs, jobs=request.jobs, backend=backend, scheduler=request.scheduler, classifier=shared)
        return results, write_summary(out_dir, results, note=echo)


def _say_what_continues(specs, echo):
    done = [s.name for s in specs if s.done]
    resumed = [s.name for s in specs if s.resume is not None]
    if done:
        echo(f"finished earlier, kept: {', '.join(done)}")
    if resumed:
        echo(f"resuming from their checkpoints: {', '.join(resumed)}")


def run_trials(specs, jobs=1, backend="loky", classifier=None, scheduler=None):
    """Run every spec; in this process one after another if ``jobs == 1``, else with joblib.

    A spec marked ``done`` (:func:`untapped.experiment.continue_runs`) is not
    run: its result is read from its ``metrics.json``. ``backend`` is any
    joblib backend name (``loky``, ``multiprocessing``, ...), or ``dask``: one
    Dask task per run on the scheduler at ``scheduler``, else on a local
    cluster, whatever ``jobs`` is (:func:`untapped.experiment.cluster.run_trials`).
    Returns the results in the order of ``specs``.
    """
    if backend == "dask":
        return cluster.run_trials(specs, scheduler=scheduler, classifier=classifier)
    results = {i: finished_result(spec) for i, spec in enumerate(specs) if spec.done}
    todo = [(i, spec) for i, spec in enumerate(specs) if not spec.done]
    if jobs == 1 or len(todo) <= 1:
        for i, spec in todo:
            results[i] = run_trial(spec, classifier)
    else:
        for (i, _), result in zip(todo, _run_parallel([spec for _, spec in todo], jobs, backend)):
            results[i] = result
    return [results[i] for i in range(len(specs))]


def _run_parallel(specs, jobs, backend):
    import joblib

    specs = [dataclasses.replace(spec, progress=False) for spec in specs]
    with joblib.parallel_config(backend=backend, n_jobs=jobs):
        return joblib.Parallel()(joblib.delayed(run_trial)(spec) for spec in specs)


def divergence(results):
    """One line saying which runs diverged, or None if none did."""
    diverged = [r for r in results if r["status"] != "ok"]
    if not diverged:
        return None
    first = diverged[0]
    return (
        f"{len(diverged)} of {len(results)} run(s) diverged; {first['model']} seed {first['seed']}: "
        f"{' '.join(first['message'].split())}"
    )


# ---------------------------------------------------------------- summaries


def summary(results):
    """Per model (and variant): the runs' cross-entropies, mean and sample standard deviation."""
    out = OrderedDict()
    for model in dict.fromkeys(_group(r) for r in results):
        runs = [r for r in results if _group(r) == model]
        values = [r["cross_entropy"] for r in runs if r.get("status") == "ok"]
        out[model] = OrderedDict(
            runs=len(runs),
            ok=len(values),
            mean=float(np.mean(values)) if values else None,
            # The sample standard deviation needs two runs; one run has none.
            sd=float(np.std(values, ddof=1)) if len(values) > 1 else None,
        )
    return out


def _group(result):
    return group_name(result["model"], result.get("variant", DEFAULT_VARIANT))


def summary_table(results):
    """The end-of-run table: per model and seed, the cross-entropy on 5-9 and each one-hot's digit; then mean +- sd."""
    width = max([9] + [len(_group(r)) for r in results])
    lines = [f"{'model':<{width}} {'seed':>6}  {'CE 5-9':>7}  {'acc':>6}  digit shown by y=0..9"]
    for r in results:
        if r.get("status") == "ok":
            digits = " ".join(str(d) for d in r["recognised"])
            lines.append(
                f"{_group(r):<{width}} {r['seed']:>6}  {r['cross_entropy']:>7.4f}  {r['accuracy']:>6.4f}  {digits}"
            )
        else:
            lines.append(
                f"{_group(r):<{width}} {r['seed']:>6}  {r.get('status', '?'):>7}  {'':>6}  {r.get('message', '')}"
            )
    for model, s in summary(results).items():
        if s["mean"] is None:
            lines.append(f"{model:<{width}} {'all':>6}  no finished runs")
        else:
            sd = "n/a" if s["sd"] is None else f"{s['sd']:.4f}"
            lines.append(f"{model:<{width}} {'mean':>6}  {s['mean']:.4f} +- {sd}  (n={s['ok']})")
    return "\n".join(lines)


def folder_results(out, results=(), note=None):
    """``results``, then the finished runs of every other run folder in ``out`` (from their ``metrics.json``).

    So a summary holds every run in the folder, whichever command wrote it.
    A ``metrics.json`` that is not a finished untapped run's (another tool's,
    or damaged: :func:`untapped.study.run_metrics.check_metrics`) is left out, and
    ``note`` receives one line naming it.
    """
    results = list(results)
    seen = {pathlib.Path(r["run_dir"]).resolve() for r in results}
    for path in sorted(pathlib.Path(out).glob(f"*/{RUN_FILES['metrics']}")):
        if path.parent.resolve() in seen:
            continue
        try:
            metrics = read_metrics(path)
        except MetricsProblem as exc:
            if note is not None:
                note(f"note: left out of the summary: {one_line(exc)}")
            continue
        results.append(result_from_metrics(metrics, path.parent))
    return results


def write_summary(out, results, note=None):
    """``summary.json`` and ``summary.txt`` in ``out``, of ``results`` and every other finished run there.

    ``note`` receives a line for each ``metrics.json`` left out (:func:`folder_results`).
    """
    out = pathlib.Path(out)
    results = folder_results(out, results, note)
    write_json(out / "summary.json", OrderedDict(runs=results, summary=summary(results)))
    table = summary_table(results)
    try:
        (out / "summary.txt").write_text(table + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {out / 'summary.txt'} ({one_line(exc)})") from None
    return table
