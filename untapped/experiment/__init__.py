"""One MNIST run end to end, and many of them: what ``run_mnist.py`` calls.

A *run* is one model (``untapped`` or ``m2``) trained with one seed, in its
own folder ``<out>/<model>-seed<seed>/`` (``<model>-<variant>-seed<seed>``
for a variant), which holds :data:`RUN_FILES`: ``config.json``,
``checkpoint.h5`` (:mod:`untapped.checkpoint`), ``history.json``,
``curves.png``, ``log.txt``, ``digits_means.png``,
``digits_double_pass.png`` and ``metrics.json``. :func:`write_summary` adds
``summary.json`` and ``summary.txt`` to ``<out>``.

The package, in the order a command uses it:

* :mod:`~untapped.experiment.spec`: what a run is (:class:`RunSpec`, its
  model and recorded configuration);
* :mod:`~untapped.experiment.plan`: which runs a command makes
  (:func:`plan_runs`, :func:`plan_resume`, :func:`continue_runs`, and
  :func:`plan_request` for a :class:`Request`, the options of ``run_mnist.py``);
* :mod:`~untapped.experiment.folder`: a run's folder (the lock, the checks
  before anything is written, atomic JSON);
* :mod:`~untapped.experiment.inputs`: the data a run reads and the digit classifier;
* :mod:`~untapped.experiment.trial`: one run, trained and judged (:func:`run_trial`);
* :mod:`~untapped.experiment.trials`: many runs and their summary
  (:func:`run_trials`, and :func:`run_request`, a whole command);
* :mod:`~untapped.experiment.environment`: the commit, versions and threads a run records;
* :mod:`~untapped.experiment.cluster`: the trials as Dask tasks (``--backend dask``), and
  :mod:`~untapped.experiment.scheduler`: reaching Dask.

Every name of the first seven is importable from ``untapped.experiment`` itself
(the package's own modules import each other by name, never through here). Every failure a
user can cause (data, checkpoint, output folder, option conflicts) is an
:class:`ExperimentError`, :class:`untapped.data.DataError`,
:class:`untapped.checkpoint.CheckpointError` or
:class:`untapped.training.TrainingError`, each with a one-line message.
"""

from untapped.experiment.environment import describe_environment, source_commit
from untapped.experiment.folder import (
    OutputError,
    finished_result,
    lock_folder,
    prepare_outputs,
    read_json,
    remove_run_files,
    result_from_metrics,
    write_json,
)
from untapped.experiment.inputs import (
    check_subset,
    classifier_data,
    data_location,
    digit_classifier,
    load_images,
    load_split,
    subset_split,
)
from untapped.experiment.plan import Request, continue_runs, default_out, plan_request, plan_resume, plan_runs
from untapped.experiment.spec import (
    RUN_FILES,
    ExperimentError,
    RunSpec,
    build_model,
    check_models,
    check_spec,
    check_variant,
    run_config,
    run_name,
)
from untapped.experiment.trial import canonical_images, judge, run_trial, save_curves, save_figures
from untapped.experiment.trials import (
    divergence,
    folder_results,
    run_request,
    run_trials,
    summary,
    summary_table,
    write_summary,
)

__all__ = [
    "RUN_FILES",
    "ExperimentError",
    "OutputError",
    "Request",
    "RunSpec",
    "build_model",
    "canonical_images",
    "check_models",
    "check_spec",
    "check_subset",
    "check_variant",
    "classifier_data",
    "continue_runs",
    "data_location",
    "default_out",
    "describe_environment",
    "digit_classifier",
    "divergence",
    "finished_result",
    "folder_results",
    "judge",
    "load_images",
    "load_split",
    "lock_folder",
    "plan_request",
    "plan_resume",
    "plan_runs",
    "prepare_outputs",
    "read_json",
    "remove_run_files",
    "result_from_metrics",
    "run_config",
    "run_name",
    "run_request",
    "run_trial",
    "run_trials",
    "save_curves",
    "save_figures",
    "source_commit",
    "subset_split",
    "summary",
    "summary_table",
    "write_json",
    "write_summary",
]
