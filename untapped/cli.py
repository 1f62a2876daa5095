"""The command line ``untapped``: ``train``, ``report`` and ``reference {export,compare,describe}``.

``untapped train`` trains untapped and/or M2 on the paper's MNIST task and
reports the digits 5-9 metric; it parses the options and calls
:func:`untapped.experiment.trials.run_request`. ``untapped report`` turns a results
folder into a report (:func:`untapped.study.report.write_report`), and
``untapped reference`` is ``untapped-reference`` (:mod:`untapped.reference.cli`).

``run_mnist.py`` is the same training and report under their first names
(:data:`run_mnist`): ``python run_mnist.py [OPTIONS]`` trains, ``python
run_mnist.py report FOLDER`` reports. Every training option can also be set
through an ``UNTAPPED_<OPTION>`` environment variable (``UNTAPPED_EPOCHS``,
``UNTAPPED_DATA_DIR`` ...). Errors are one line on stderr (``error: ...``)
with a non-zero exit status; no traceback.
"""

import importlib.metadata
import os
import pathlib
import signal
import sys

import click
from click.core import ParameterSource

from untapped import commands
from untapped.presets import (
    BATCH_SIZE,
    DEFAULT_MODE,
    DEFAULT_SEED,
    EPOCHS,
    EVAL_EVERY,
    MAX_SEED,
    MODELS,
    MODES,
    VARIANTS,
)
from untapped.reference import cli as reference

EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

EXIT_STATUSES = (
    "Exit status: 0 done; 1 error (data, files, scheduler, and options that contradict each other or the run "
    "they continue); 2 bad option (unknown, or a value out of its range); 3 a run diverged (NaN/inf); "
    "130 interrupted (Ctrl-C; a second Ctrl-C quits at once, the checkpoints are written whole)."
)


# ---------------------------------------------------------------- signals


def _interrupt(signum, frame):
    """The first Ctrl-C (or a scheduler's SIGTERM): stop at the end of the step, saving; the next one quits at once."""
    signal.signal(signal.SIGINT, _quit_now)
    signal.signal(signal.SIGTERM, _quit_now)
    raise KeyboardInterrupt


def _quit_now(signum, frame):
    """A second Ctrl-C while the first is handled, or during the exit handlers: quit now, in one line.

    Nothing is lost that was saved: every file is written whole or not at all
    (:func:`untapped.files.atomic_output`).
    """
    os.write(2, b"interrupted: quitting now; the files on disk are whole\n")
    os._exit(EXIT_INTERRUPTED)


def run(group):
    """Run the command ``group``; a Ctrl-C during the exit handlers that follow (Dask's, PyTensor's) quits at once."""
    try:
        group()
    finally:
        signal.signal(signal.SIGINT, _quit_now)


# ---------------------------------------------------------------- train


def _variant_help():
    """Each variant, and the model it applies to when it is not both."""
    lines = []
    for name, variant in VARIANTS.items():
        only = ""
        if variant.models != MODELS:
            only = f" ({', '.join(variant.models)} only: give --model {variant.models[0]})"
        lines.append(f"{name}{only}: {variant.description}")
    return "A reading of the paper instead of the original code (docs/fidelity.md): " + "; ".join(lines) + "."


def _version():
    # Read without importing untapped (and PyTensor), so --help and --version stay fast.
    try:
        return importlib.metadata.version("untapped")
    except importlib.metadata.PackageNotFoundError:
        import untapped

        return untapped.__version__


#: The training options, shared by ``untapped train`` and ``run_mnist.py``.
TRAIN_OPTIONS = [
    click.Option(["--epochs"], type=click.IntRange(min=0), default=EPOCHS,
                 help="Training epochs (the total, when resuming)."),
    click.Option(["--batch", "batch_size"], envvar="UNTAPPED_BATCH", type=click.IntRange(min=1), default=BATCH_SIZE,
                 help="Batch size of every source (labeled, unlabeled, unfeatured)."),
    click.Option(["--model"], type=click.Choice([*MODELS, "both"]), default="both",
                 help="Which model(s) to train."),
    click.Option(["--variant"], type=click.Choice(list(VARIANTS)), default="code", help=_variant_help()),
    click.Option(["--trials"], type=click.IntRange(min=1), default=1,
                 help="Independent runs per model, with seeds seed .. seed+trials-1."),
    click.Option(["--jobs"], type=click.IntRange(min=1), default=1, help="Runs in parallel (joblib)."),
    click.Option(["--backend"], type=click.Choice(["loky", "multiprocessing", "dask", "sequential"]), default="loky",
                 help="joblib backend for --jobs > 1; dask: one Dask task per run on --scheduler, else on a local "
                      "cluster sized to the machine (needs the extra: pip install -e '.[dask]')."),
    click.Option(["--scheduler"], default=None, metavar="ADDRESS",
                 help="A running dask.distributed scheduler (tcp://host:8786) to run the trials on (implies "
                      "--backend dask; --jobs does not apply, the workers' threads decide). Every worker must reach "
                      "--out and the data folder at the same absolute paths."),
    click.Option(["--seed"], type=click.IntRange(min=0, max=MAX_SEED), default=DEFAULT_SEED,
                 help="Seed of the first run: data split, weights, noise, shuffles."),
    click.Option(["--data-dir"], type=click.Path(path_type=pathlib.Path), default=None,
                 help="Folder with the MNIST IDX files (or mnist.pkl.gz); default: the user cache, downloading if "
                      "needed."),
    click.Option(["--out"], type=click.Path(path_type=pathlib.Path), default=None,
                 show_default="results/mnist/<timestamp>",
                 help="Output folder; each run writes to <out>/<model>-seed<seed>/."),
    click.Option(["--resume"], type=click.Path(path_type=pathlib.Path), default=None,
                 help="Continue the run saved in this checkpoint (.h5) up to --epochs."),
    click.Option(["--eval-every"], type=click.IntRange(min=1), default=EVAL_EVERY,
                 help="Evaluate all five terms every N epochs (and after the last)."),
    click.Option(["--mode"], type=click.Choice(MODES), default=DEFAULT_MODE,
                 help="Compile mode: c (the C backend with the fast kernels, as Theano ran), plain (the paper layer "
                      "in stock PyTensor ops only) or numba."),
    click.Option(["--subset"], type=click.IntRange(min=1), default=None,
                 help="Use only the first N labeled, evaluation and unlabeled rows (quick tests); N must cut "
                      "something, less than the largest set's rows (35735 for MNIST)."),
    click.Option(["--overwrite"], is_flag=True, default=False,
                 help="Allow a fresh run to replace an existing run's files in --out."),
]

TRAIN_HELP = """Train the untapped model and/or M2 on MNIST (labels for digits 0-4 only) as the 2017 code did,
    then draw Figure 2 and measure the cross-entropy of the permuted q(y|x) on digits 5-9.

    Each run writes config.json, checkpoint.h5, history.json, curves.png, log.txt, digits_means.png,
    digits_double_pass.png and metrics.json to <out>/<model>-seed<seed>/; the table at the end
    is also saved as <out>/summary.txt and summary.json.

    Every option can also be set through an environment variable UNTAPPED_<OPTION>,
    e.g. UNTAPPED_EPOCHS=150 or UNTAPPED_DATA_DIR=../shared/data/mnist.

    Running the same command again continues it: finished runs are kept, interrupted
    ones resume from their checkpoints, and a run with more epochs than --epochs is
    refused before anything is written (--overwrite replaces it). `{report}` turns
    a results folder into a report."""


def _given(ctx):
    """The options the user gave, each with how: ``--seed 5`` typed, or ``UNTAPPED_SEED=5`` from the environment."""
    given = {}
    for param in ctx.command.params:
        name = param.name
        source = ctx.get_parameter_source(name) if name in ctx.params else None
        if source in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        value = ctx.params[name]
        if source == ParameterSource.ENVIRONMENT:
            given[name] = f"{param.envvar or 'UNTAPPED_' + name.upper()}={value} (from the environment)"
        else:
            given[name] = f"{param.opts[0]} {value}"
    return given


def _command_line(ctx, program):
    """The command as the options it was given (typed or from ``UNTAPPED_*``), for the run's records."""
    words = [program]
    for param in ctx.command.params:
        if param.name not in ctx.params or ctx.get_parameter_source(param.name) in (
            ParameterSource.DEFAULT,
            ParameterSource.DEFAULT_MAP,
        ):
            continue
        value = ctx.params[param.name]
        flag = param.opts[0]
        if param.is_flag:
            words += [flag] if value else []
        elif value is not None:
            words += [flag, str(value)]
    return " ".join(words)


def _show_progress_messages():
    """Print untapped's log messages (a download from a mirror, a bad mirror) on stderr as they happen."""
    import logging

    logger = logging.getLogger("untapped")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def train(ctx, program, **options):
    """Plan, train, judge and summarise the runs the options ask for; ``program`` names the command in the records."""
    from untapped.checkpoint import CheckpointError
    from untapped.data import DataError
    from untapped.experiment.plan import Request
    from untapped.experiment.spec import ExperimentError
    from untapped.experiment.trials import divergence, run_request
    from untapped.training import TrainingInterrupted

    request = Request(
        **options, command=_command_line(ctx, program), interactive=sys.stderr.isatty(), given=_given(ctx)
    )
    _show_progress_messages()
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop is a Ctrl-C
    previous_sigint = signal.signal(signal.SIGINT, _interrupt)
    try:
        with commands.one_line_errors(DataError, CheckpointError, ExperimentError):
            results, table = run_request(request, echo=click.echo)
    except TrainingInterrupted as exc:
        click.echo(f"interrupted: {exc}", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("interrupted: checkpoints of completed epochs are kept in the run folders", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        signal.signal(signal.SIGINT, previous_sigint)
    click.echo("")
    click.echo(table)
    diverged = divergence(results)
    if diverged is not None:
        error = click.ClickException(diverged)
        error.exit_code = EXIT_DIVERGED
        raise error


TRAIN_SETTINGS = dict(auto_envvar_prefix="UNTAPPED", show_default=True, help_option_names=["-h", "--help"])
VERSION = click.version_option(version=_version(), prog_name="untapped", message="%(prog)s %(version)s")


def _training(decorate, program, report):
    """A training command made by the click decorator ``decorate``, its records naming ``program``."""

    @decorate
    @VERSION
    @click.pass_context
    def command(ctx, **options):
        if ctx.invoked_subcommand is None:
            train(ctx, program, **options)

    command.params[:0] = TRAIN_OPTIONS  # before --version, as click lists the decorators' options
    command.help = TRAIN_HELP.format(report=report)
    return command


# ---------------------------------------------------------------- report


@click.command("report", context_settings=dict(help_option_names=["-h", "--help"]),
               short_help="A results folder's report: report.md, study.json, figures.")
@click.argument("folder", type=click.Path(path_type=pathlib.Path))
@click.option("--to", "out", type=click.Path(path_type=pathlib.Path), default=None, show_default="FOLDER/report",
              help="Where to write report.md, study.json and the figures.")
@click.option("--with", "recorded", type=click.Path(path_type=pathlib.Path), multiple=True, metavar="STUDY_JSON",
              help="An earlier report's study.json whose runs join FOLDER's (their run folders need not exist; "
                   "their training terms are then missing). Repeatable. A run (model, variant, seed) in both is "
                   "an error.")
def report(folder, out, recorded):
    """Turn the results folder FOLDER (runs written by this command) into report.md, study.json and PNG figures."""
    from untapped.study.report import ReportError, write_report

    with commands.one_line_errors(ReportError):
        path = write_report(folder, out, recorded, note=lambda line: click.echo(f"note: {line}", err=True))
    click.echo(f"report: {path}")


# ---------------------------------------------------------------- the commands


@click.group(cls=commands.OneLineErrors, context_settings=dict(help_option_names=["-h", "--help"]),
             epilog="Exit status: as each command's --help says; 2 a bad option, 130 interrupted.")
@VERSION
def main():
    """untapped: the paper's MNIST experiment, its report, and reference bundles for checking a port."""


main.add_command(_training(
    click.command("train", context_settings=TRAIN_SETTINGS, epilog=EXIT_STATUSES,
                  short_help="Train untapped and/or M2 on MNIST; measure the digits 5-9 metric."),
    "untapped train", report="untapped report FOLDER",
))
main.add_command(report)
main.add_command(reference.main, "reference")

#: ``run_mnist.py``: trains without a subcommand, and has ``report``.
run_mnist = _training(
    click.group(cls=commands.OneLineErrors, invoke_without_command=True, context_settings=TRAIN_SETTINGS,
                epilog=EXIT_STATUSES),
    "python run_mnist.py", report="run_mnist.py report OUT",
)
run_mnist.add_command(report)
