"""The command line ``untapped-reference`` (also ``untapped reference``, ``python -m untapped.reference``).

Its commands export, compare and describe bundles. Exit status: 0 success
(``compare``: every dataset within tolerance), 1 ``compare`` found a
difference (or a missing, extra, misshapen or mistyped dataset), 2 an error
(bad option, unreadable file, not a bundle, another format version),
reported as one ``error: ...`` line.
"""

import pathlib
import sys

import click

from untapped import commands
from untapped.presets import DEFAULT_MODE, MODELS, MODES
from untapped.reference.bundle import BundleError
from untapped.reference.comparing import compare
from untapped.reference.exporting import DEFAULT_ROWS, DEFAULT_SEED, DEFAULT_STEPS, MAX_ROWS, export
from untapped.reference.inputs import INPUT_SOURCES
from untapped.reference.reports import describe, format_report, report_json

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2


class OneLineErrors(commands.OneLineErrors):
    """untapped-reference's errors: every one, a bad option, Ctrl-C or a bundle's, exits 2."""

    abort_exit = EXIT_ERROR


#: A bundle's errors (and PyTensor's start), as one line exiting 2.
bundle_errors = commands.one_line_errors(BundleError, exit_code=EXIT_ERROR)


@click.group(
    cls=OneLineErrors,
    context_settings=dict(help_option_names=["-h", "--help"]),
    short_help="Reference bundles: export, compare and describe them.",
    epilog="Exit status: 0 success, 1 compare found differences, 2 error. Format: docs/reference_format.md.",
)
def main():
    """Reference bundles: export what untapped computes, compare a port's bundle with it, describe a bundle."""


@main.command("export", context_settings=dict(show_default=True))
@click.argument("out", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--model", type=click.Choice(MODELS), default="untapped",
              help="Coefficients: untapped or the M2 baseline.")
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED,
              help="Initial weights (RandomState), inputs and noise.")
@click.option("--rows", type=click.IntRange(1, MAX_ROWS), default=DEFAULT_ROWS,
              help="Rows of each source (labeled, unlabeled, unfeatured).")
@click.option("--steps", type=click.IntRange(min=0), default=DEFAULT_STEPS,
              help="Optimiser steps, each with its own noise.")
@click.option("--inputs", type=click.Choice(INPUT_SOURCES), default="auto",
              help="MNIST rows, the synthetic batch, or MNIST if found (no download) else synthetic.")
@click.option("--data-dir", type=click.Path(path_type=pathlib.Path), default=None,
              help="Folder with the MNIST IDX files (or mnist.pkl.gz); "
              "default: UNTAPPED_DATA_DIR, then the user cache.")
@click.option("--download", is_flag=True, default=False, help="Download MNIST into the user cache if it is not found.")
@click.option("--mode", type=click.Choice(MODES), default=DEFAULT_MODE,
              help="PyTensor compile mode, as run_mnist.py --mode.")
@click.option("--force", is_flag=True, default=False, help="Replace OUT if it exists.")
@bundle_errors
def export_command(out, model, seed, rows, steps, inputs, data_dir, download, mode, force):
    """Write a reference bundle to OUT (HDF5)."""
    summary = export(out, model, seed, rows, steps, inputs, data_dir, download, mode, overwrite=force)
    click.echo(summary["inputs"], err=True)
    click.echo(
        f"wrote {summary['path']}: {summary['datasets']} datasets, model {model}, seed {seed}, {rows} rows per source "
        f"({summary['inputs_source']} inputs), {steps} steps; total {summary['total']:.6g}"
    )


@main.command("compare", short_help="Check bundle ACTUAL against EXPECTED.")
@click.argument("expected", type=click.Path(path_type=pathlib.Path))
@click.argument("actual", type=click.Path(path_type=pathlib.Path))
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the results as JSON.")
@click.option("--failures", is_flag=True, default=False, help="List only the datasets that do not pass.")
@bundle_errors
def compare_command(expected, actual, as_json, failures):
    """Check bundle ACTUAL against EXPECTED, dataset by dataset, with EXPECTED's tolerances."""
    report = compare(expected, actual)
    click.echo(report_json(report) if as_json else format_report(report, failures_only=failures))
    sys.exit(EXIT_OK if report["passed"] else EXIT_DIFFERENT)


@main.command("describe")
@click.argument("path", type=click.Path(path_type=pathlib.Path))
@bundle_errors
def describe_command(path):
    """Print a bundle's attributes and layout."""
    click.echo(describe(path))

