#!/usr/bin/env python
"""Train untapped and/or M2 on the paper's MNIST task and report the digits 5-9 metric.

A thin command line over :mod:`untapped.experiment`: it parses options,
prints the environment, and calls the library. Every option can also be set
through an ``UNTAPPED_<OPTION>`` environment variable (``UNTAPPED_EPOCHS``,
``UNTAPPED_DATA_DIR`` ...). Errors are one line on stderr (``error: ...``)
with a non-zero exit status; no traceback.
"""

import pathlib
import signal
import sys
import time

import click

from untapped import commands
from untapped.presets import DEFAULT_MODE, MODELS, MODES, VARIANTS

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
#: Seeds are 32-bit, as NumPy's legacy RandomState (the original's initialiser) takes them.
MAX_SEED = 2**32 - 1


class OneLineErrors(commands.OneLineErrors):
    """run_mnist.py's errors: 2 a bad option, 130 Ctrl-C (the library's errors are handled per command)."""

    abort_exit = EXIT_INTERRUPTED


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _timestamp_out():
    return str(pathlib.Path("results") / "mnist" / time.strftime("%Y-%m-%d-%H-%M-%S"))


def _show_progress_messages():
    """Print untapped's log messages (a download from a mirror, a bad mirror) on stderr as they happen."""
    import logging

    logger = logging.getLogger("untapped")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _origin(ctx, name):
    """How the user gave option ``name``: ``--seed 5`` typed, or ``UNTAPPED_SEED=5`` from the environment."""
    from click.core import ParameterSource

    value = ctx.params[name]
    if ctx.get_parameter_source(name) == ParameterSource.ENVIRONMENT:
        return f"UNTAPPED_{name.upper()}={value} (from the environment)"
    return f"--{name.replace('_', '-')} {value}"


def _command_line(ctx):
    """The command as the options it was given (typed or from ``UNTAPPED_*``), for the run's records."""
    from click.core import ParameterSource

    words = ["python", "run_mnist.py"]
    for param in ctx.command.params:
        if param.name not in ctx.params or ctx.get_parameter_source(param.name) in (
            ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP
        ):
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if param.is_flag:
            words += [flag] if value else []
        elif value is not None:
            words += [flag, str(value)]
    return " ".join(words)


def _version():
    # Read without importing untapped (and PyTensor), so --help and --version stay fast.
    import importlib.metadata

    try:
        return importlib.metadata.version("untapped")
    except importlib.metadata.PackageNotFoundError:
        import untapped

        return untapped.__version__


@click.group(
    cls=OneLineErrors,
    invoke_without_command=True,
    context_settings=dict(auto_envvar_prefix="UNTAPPED", show_default=True, help_option_names=["-h", "--help"]),
    epilog="Exit status: 0 done, 1 error, 2 bad option, 3 a run diverged (NaN/inf), 130 interrupted (Ctrl-C).",
)
@click.option("--epochs", type=click.IntRange(min=0), default=150, help="Training epochs (the total, when resuming).")
@click.option("--batch", type=click.IntRange(min=1), default=10000, help="Batch size of every source (labeled, unlabeled, unfeatured).")
@click.option("--model", "model", type=click.Choice([*MODELS, "both"]), default="both", help="Which model(s) to train.")
@click.option("--variant", type=click.Choice(list(VARIANTS)), default="code",
              help="A reading of the paper instead of the original code (docs/fidelity.md): " + "; ".join(f"{k}: {v.description}" for k, v in VARIANTS.items()) + ".")
@click.option("--trials", type=click.IntRange(min=1), default=1, help="Independent runs per model, with seeds seed .. seed+trials-1.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, help="Runs in parallel (joblib).")
@click.option("--backend", type=click.Choice(["loky", "multiprocessing", "dask", "sequential"]), default="loky",
              help="joblib backend for --jobs > 1; dask: one Dask task per run on --scheduler, else on a local "
                   "cluster sized to the machine (needs the extra: pip install -e '.[dask]').")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="A running dask.distributed scheduler (tcp://host:8786) to run the trials on (implies --backend "
                   "dask; --jobs does not apply, the workers' threads decide). Every worker must reach --out and the data folder at the "
                   "same absolute paths.")
@click.option("--seed", type=click.IntRange(min=0, max=MAX_SEED), default=1234, help="Seed of the first run: data split, weights, noise, shuffles.")
@click.option("--data-dir", type=click.Path(path_type=pathlib.Path), default=None,
              help="Folder with the MNIST IDX files (or mnist.pkl.gz); default: the user cache, downloading if needed.")
@click.option("--out", type=click.Path(path_type=pathlib.Path), default=None, show_default="results/mnist/<timestamp>",
              help="Output folder; each run writes to <out>/<model>-seed<seed>/.")
@click.option("--resume", type=click.Path(path_type=pathlib.Path), default=None,
              help="Continue the run saved in this checkpoint (.h5) up to --epochs.")
@click.option("--eval-every", type=click.IntRange(min=1), default=10, help="Evaluate all five terms every N epochs (and after the last).")
@click.option("--mode", type=click.Choice(MODES), default=DEFAULT_MODE, help="PyTensor backend: C (as Theano) or Numba.")
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Use only the first N labeled, evaluation and unlabeled rows (quick tests).")
@click.option("--overwrite", is_flag=True, default=False, help="Allow a fresh run to replace an existing run's files in --out.")
@click.version_option(version=_version(), prog_name="untapped", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx, epochs, batch, model, variant, trials, jobs, backend, scheduler, seed, data_dir, out, resume, eval_every, mode, subset, overwrite):
    """Train the untapped model and/or M2 on MNIST (labels for digits 0-4 only) as the 2017 code did,
    then draw Figure 2 and measure the cross-entropy of the permuted q(y|x) on digits 5-9.

    Each run writes config.json, checkpoint.h5, history.json, curves.png, log.txt, digits_means.png,
    digits_double_pass.png and metrics.json to <out>/<model>-seed<seed>/; the table at the end
    is also saved as <out>/summary.txt and summary.json.

    Every option can also be set through an environment variable UNTAPPED_<OPTION>,
    e.g. UNTAPPED_EPOCHS=150 or UNTAPPED_DATA_DIR=../shared/data/mnist.

    Running the same command again continues it: finished runs are kept, interrupted
    ones resume from their checkpoints. `run_mnist.py report OUT` turns a results
    folder into a report."""
    if ctx.invoked_subcommand is not None:
        return
    from click.core import ParameterSource

    from untapped import experiment
    from untapped.checkpoint import CheckpointError
    from untapped.data import DataError
    from untapped.training import TrainingInterrupted

    def given(name):
        return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)

    folder_lock = None
    _show_progress_messages()
    interactive = sys.stderr.isatty()
    command = _command_line(ctx)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop is a Ctrl-C
    try:
        if scheduler is not None or backend == "dask":
            if backend != "dask" and given("backend"):
                raise experiment.ExperimentError(f"--scheduler runs the trials on Dask; drop --backend {backend}")
            from untapped import cluster

            cluster.check(scheduler)  # before anything is fitted or written
            backend = "dask"
        if resume is not None:
            if trials != 1:
                raise experiment.ExperimentError("--resume continues one run; leave --trials at 1")
            conflicts = {}
            if given("model"):
                if model == "both":
                    raise experiment.ExperimentError("--resume continues one run; give --model untapped or m2, or omit it")
                conflicts["model"] = model
            for name, value in (("seed", seed), ("batch", batch), ("subset", subset), ("variant", variant)):
                if given(name):
                    conflicts[name] = value
            labels = {name: _origin(ctx, name) for name in conflicts}
            specs = [
                experiment.plan_resume(
                    resume,
                    given=conflicts,
                    labels=labels,
                    out=out if given("out") else None,
                    epochs=epochs if given("epochs") else None,
                    eval_every=eval_every if given("eval_every") else None,
                    mode=mode if given("mode") else None,
                    data_dir=str(data_dir) if data_dir is not None else None,
                    overwrite=overwrite,
                    command=command,
                    progress=interactive,
                    echo=not interactive,
                )
            ]
        else:
            models = list(experiment.MODELS) if model == "both" else [model]
            if seed + trials - 1 > MAX_SEED:
                raise experiment.ExperimentError(
                    f"--seed {seed} with --trials {trials} needs seeds up to {seed + trials - 1}; the largest is {MAX_SEED}"
                )
            specs = experiment.plan_runs(
                models,
                range(seed, seed + trials),
                out if out is not None else _timestamp_out(),
                variant=variant,
                command=command,
                epochs=epochs,
                batch=batch,
                eval_every=eval_every,
                mode=mode,
                data_dir=str(data_dir) if data_dir is not None else None,
                subset=subset,
                overwrite=overwrite,
                progress=interactive and jobs == 1,
                echo=not (interactive and jobs == 1),
            )
            specs = experiment.continue_runs(specs)
            done = [s.name for s in specs if s.done]
            resumed = [s.name for s in specs if s.resume is not None]
            if done:
                click.echo(f"finished earlier, kept: {', '.join(done)}")
            if resumed:
                click.echo(f"resuming from their checkpoints: {', '.join(resumed)}")
        out_dir = pathlib.Path(specs[0].out).parent
        location = experiment.data_location(specs[0].data_dir)
        for line in experiment.describe_environment(specs[0].mode, location):
            click.echo(line)
        images = experiment.load_images(str(location))  # read and verify the data before anything is written
        folder_lock = experiment.lock_folder(out_dir)  # one writer at a time
        experiment.prepare_outputs(specs)
        click.echo(f"output: {out_dir}  runs: {', '.join(s.name for s in specs)}")
        began = time.perf_counter()
        classifier = experiment.digit_classifier(str(location), specs[0].subset, images=images)
        del images  # the runs read their splits themselves
        click.echo(f"digit classifier ready in {time.perf_counter() - began:.1f} s (fitted once, then cached)")
        results = experiment.run_trials(specs, jobs=jobs, backend=backend, scheduler=scheduler,
                                        classifier=classifier if jobs == 1 or backend == "dask" else None)
        table = experiment.write_summary(out_dir, results)
    except TrainingInterrupted as exc:
        click.echo(f"interrupted: {exc}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted: checkpoints of completed epochs are kept in the run folders", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (DataError, CheckpointError, experiment.ExperimentError) as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)
        sys.exit(EXIT_ERROR)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if folder_lock is not None:
            folder_lock.release()
    click.echo("")
    click.echo(table)
    diverged = [r for r in results if r["status"] != "ok"]
    if diverged:
        first = diverged[0]
        click.echo(
            f"error: {len(diverged)} of {len(results)} run(s) diverged; {first['model']} seed {first['seed']}: "
            f"{' '.join(first['message'].split())}",
            err=True,
        )
        sys.exit(EXIT_DIVERGED)


@main.command("report")
@click.argument("folder", type=click.Path(path_type=pathlib.Path))
@click.option("--to", "out", type=click.Path(path_type=pathlib.Path), default=None, show_default="FOLDER/report",
              help="Where to write report.md, study.json and the figures.")
def report(folder, out):
    """Turn the results folder FOLDER (runs written by this command) into report.md, study.json and PNG figures."""
    from untapped.report import ReportError, write_report

    try:
        path = write_report(folder, out)
    except ReportError as exc:
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"report: {path}")


if __name__ == "__main__":
    main()
