"""What a run is: its :class:`RunSpec`, its name and files, the model it trains and the configuration it records."""

import dataclasses
import pathlib
from collections import OrderedDict

import untapped
from untapped import checkpoint as ckpt_io
from untapped.experiment.environment import source_commit
from untapped.files import one_line
from untapped.presets import (
    BATCH_SIZE,
    DEFAULT_MODE,
    DEFAULT_SEED,
    DEFAULT_VARIANT,
    EPOCHS,
    EVAL_EVERY,
    MODELS,
    MODES,
    VARIANTS,
)

#: File names inside a run's folder.
RUN_FILES = OrderedDict(
    config="config.json",
    checkpoint="checkpoint.h5",
    history="history.json",
    curves="curves.png",
    log="log.txt",
    figure="digits_means.png",
    figure_double_pass="digits_double_pass.png",
    metrics="metrics.json",
)


#: The settings every run of a command shares that are also hyperparameters of its
#: :class:`untapped.model.SSDGM`: the model takes them from the spec, and training from the model.
SCHEDULE = ("epochs", "batch_size", "eval_every", "mode")


class ExperimentError(Exception):
    """A run cannot start or finish as asked (bad options, output folder); one-line message."""


@dataclasses.dataclass
class RunSpec:
    """Everything :func:`untapped.experiment.run_trial` needs; picklable, so trials can run in other processes.

    ``out`` is the run's own folder. ``subset`` keeps only the first
    ``subset`` rows of the labeled, evaluation and unlabeled sets (for quick
    tests). ``resume`` is a checkpoint path to continue from; ``epochs`` is
    then the total. ``classifier_cache`` is the digit classifier's cache
    folder (None: :func:`untapped.evaluation.default_cache_dir`).
    ``model_params`` are extra :class:`untapped.model.SSDGM` hyperparameters;
    the seed and the :data:`SCHEDULE` are the spec's own (:meth:`model_settings`).
    ``progress`` shows a progress bar, ``echo`` prints the log's lines;
    ``command`` is recorded with the run; ``done`` marks a run that finished
    earlier (:func:`untapped.experiment.continue_runs`).
    """

    model: str = "untapped"
    seed: int = DEFAULT_SEED
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    eval_every: int = EVAL_EVERY
    mode: str = DEFAULT_MODE
    out: str = "results/mnist/run"
    data_dir: str = None
    subset: int = None
    resume: str = None
    overwrite: bool = False
    progress: bool = False
    echo: bool = False
    classifier_cache: str = None
    model_params: dict = dataclasses.field(default_factory=dict)
    variant: str = DEFAULT_VARIANT
    command: str = None
    done: bool = False

    @property
    def name(self):
        return run_name(self.model, self.seed, self.variant)

    def model_settings(self):
        """The hyperparameters of the run's model that the spec sets: its seed and :data:`SCHEDULE`."""
        return OrderedDict((k, getattr(self, k)) for k in ("seed",) + SCHEDULE)

    def path(self, key):
        """The path of the run's file ``key`` (a key of :data:`RUN_FILES`)."""
        return pathlib.Path(self.out) / RUN_FILES[key]


def run_name(model, seed, variant=DEFAULT_VARIANT):
    """``<model>-seed<seed>``, or ``<model>-<variant>-seed<seed>`` for a variant other than ``code``."""
    return f"{model}-seed{seed}" if variant == DEFAULT_VARIANT else f"{model}-{variant}-seed{seed}"


def check_models(models):
    """Raise :class:`ExperimentError` unless every name of ``models`` is one of :data:`untapped.presets.MODELS`."""
    for model in models:
        if model not in MODELS:
            raise ExperimentError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


def check_variant(variant, models):
    """Raise :class:`ExperimentError` unless ``variant`` exists and applies to each of ``models``."""
    if variant not in VARIANTS:
        raise ExperimentError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    wrong = [m for m in models if m not in VARIANTS[variant].models]
    if wrong:
        raise ExperimentError(
            f"--variant {variant} applies to {', '.join(VARIANTS[variant].models)} only, not {', '.join(wrong)}"
            + (f"; give --model {VARIANTS[variant].models[0]}" if len(VARIANTS[variant].models) == 1 else "")
        )


def check_spec(spec):
    """Raise :class:`ExperimentError` unless the spec's model and compile mode exist."""
    check_models([spec.model])
    if spec.mode not in MODES:
        raise ExperimentError(f"unknown mode {spec.mode!r}; choose from {', '.join(MODES)}")


def build_model(spec, resume=None):
    """The :class:`untapped.model.SSDGM` of ``spec`` (untrained; nothing compiled).

    A fresh run takes its model's preset, the variant's and the spec's
    hyperparameters; a resumed run those recorded in the checkpoint
    ``resume``, with the spec's schedule.
    """
    from untapped.model import SSDGM

    if resume is not None:
        params = dict(resume.config.get("model_params", {}))  # names brought up to date by ckpt_io.load
        params.update(spec.model_params)
        params.update(spec.model_settings())
        try:
            return SSDGM(**params)
        except TypeError as exc:
            raise ckpt_io.CheckpointError(
                f"{spec.resume}: model parameters do not fit this untapped ({one_line(exc)})"
            ) from None
    variant = VARIANTS[spec.variant].model_params(spec.model) if spec.variant in VARIANTS else {}
    return SSDGM.from_preset(spec.model, **{**variant, **spec.model_params, **spec.model_settings()})


def run_config(spec, model, location):
    """The run's ``config.json``: its settings, where its data came from, the version and commit, the model's
    hyperparameters.

    ``location`` is the MNIST file or folder read; None (planning only)
    records no data folder and no commit.
    """
    return OrderedDict(
        model=spec.model,
        **spec.model_settings(),
        subset=spec.subset,
        data_dir=str(pathlib.Path(location).resolve()) if location is not None else None,
        resumed_from=spec.resume,
        untapped_version=untapped.__version__,
        variant=spec.variant,
        commit=source_commit() if location is not None else None,
        command=spec.command,
        model_params=model.get_params(),
    )
