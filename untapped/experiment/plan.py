"""Which runs a command makes: fresh runs, a resumed run, and what their folders already hold.

:func:`plan_runs` makes one :class:`~untapped.experiment.spec.RunSpec` per
model and seed; :func:`plan_resume` the one that continues a checkpoint,
refusing options that contradict it; :func:`continue_runs` matches each
spec to what its folder holds, so that running the same command again
continues it. :func:`plan_request` does all three for a :class:`Request`,
the options of ``run_mnist.py``.
"""

import dataclasses
import json
import pathlib
import time

from untapped import checkpoint as ckpt_io
from untapped.experiment import scheduler
from untapped.experiment.folder import OutputError, read_json
from untapped.experiment.spec import (
    SCHEDULE,
    ExperimentError,
    RunSpec,
    build_model,
    check_models,
    check_variant,
    run_config,
    run_name,
)
from untapped.files import jsonable, one_line
from untapped.presets import DEFAULT_VARIANT, MAX_SEED, MODELS, upgrade_config
from untapped.study.run_metrics import MetricsProblem, read_metrics

#: Settings a resumed run takes from its checkpoint unless the user gives them: a resume may change them.
_RECORDED = ("epochs", "eval_every", "mode", "data_dir")
#: Settings that make two runs the same run, with the model's other hyperparameters but those of
#: :data:`_RECORDED`; a resume takes them from its checkpoint, and refuses a given one that differs.
_IDENTITY = ("model", "seed", "batch_size", "subset", "variant")


def plan_runs(models, seeds, out, variant=DEFAULT_VARIANT, **options):
    """One :class:`RunSpec` per seed and model (seed-major), each in ``<out>/<run_name>``."""
    check_models(models)
    check_variant(variant, models)
    out = pathlib.Path(out)
    return [
        RunSpec(model=model, seed=int(seed), variant=variant, out=str(out / run_name(model, seed, variant)), **options)
        for seed in seeds
        for model in models
    ]


def plan_resume(path, given=None, out=None, labels=None, **options):
    """The :class:`RunSpec` that continues the run saved in checkpoint ``path``.

    The model, seed, batch size and subset come from the checkpoint; ``given``
    maps those of them that the user set explicitly to their values, and any
    that differs from the checkpoint's is an :class:`ExperimentError`, which
    names the setting as ``labels[key]`` says (default ``--key value``).
    ``options`` (``epochs``, ``eval_every``, ``mode``, ``data_dir`` ...)
    override the checkpoint's when not None. The run continues in ``out /
    <model>-seed<seed>`` if ``out`` is given, else in the checkpoint's folder.
    """
    ckpt = ckpt_io.load(path)
    config = ckpt.config
    missing = [k for k in ("model", "seed", "batch_size", "epochs", "eval_every") if k not in config]
    if missing:
        raise ckpt_io.CheckpointError(f"{path}: no run configuration ({', '.join(missing)}) in the checkpoint")
    _check_given(config, given or {}, labels or {})
    settings = _resume_settings(config, options, ckpt.epoch)
    variant = config.get("variant", DEFAULT_VARIANT)
    if out is not None:
        folder = pathlib.Path(out) / run_name(config["model"], config["seed"], variant)
    else:
        folder = pathlib.Path(path).resolve().parent
    params = config.get("model_params", {})
    return RunSpec(
        model=config["model"],
        seed=int(config["seed"]),
        batch_size=int(config["batch_size"]),
        subset=config.get("subset"),
        out=str(folder),
        resume=str(path),
        model_params={k: v for k, v in params.items() if k not in _RECORDED},
        variant=variant,
        **settings,
        **{k: v for k, v in options.items() if k not in _RECORDED and v is not None},
    )


def _check_given(config, given, labels):
    """Raise :class:`ExperimentError` if a setting the user gave differs from the checkpoint's."""
    for key, value in given.items():
        if value is not None and config.get(key, DEFAULT_VARIANT if key == "variant" else None) != value:
            said = labels.get(key, f"--{key.replace('_', '-')} {value}")
            raise ExperimentError(f"{said} conflicts with the checkpoint's {config.get(key)}; omit it when resuming")


def _resume_settings(config, options, epochs_done):
    """The checkpoint's :data:`_RECORDED` settings, with those of ``options`` that are not None."""
    settings = {k: config.get(k) for k in _RECORDED}
    settings.update({k: v for k, v in options.items() if k in _RECORDED and v is not None})
    if settings["data_dir"] is not None and not pathlib.Path(settings["data_dir"]).exists():
        settings["data_dir"] = None  # the recorded folder is gone: search as usual
    if int(settings["epochs"]) < epochs_done:
        raise ExperimentError(
            f"the checkpoint has {epochs_done} epochs done; --epochs {settings['epochs']} asks for fewer"
        )
    return settings


# ---------------------------------------------------------------- continuing


def continue_runs(specs):
    """Match each run's folder to its spec, so that running the same command again continues it.

    Per spec, by what its folder holds:

    * nothing of a run: a fresh run;
    * a run of the same configuration (model, seed, batch size, subset, variant,
      hyperparameters) that finished with ``spec.epochs`` epochs
      (``metrics.json``): ``done``, it is not run again;
    * the same run with a checkpoint (interrupted, or finished with fewer
      epochs): it resumes from the checkpoint;
    * a different run, one with more epochs than asked (finished or not), or
      a damaged ``metrics.json`` (:mod:`untapped.study.run_metrics`): :class:`OutputError`,
      before anything is written;
    * a checkpoint that cannot be read: :class:`untapped.checkpoint.CheckpointError`.

    With ``spec.overwrite`` the folder's run files are removed and the run
    starts afresh. Specs that already resume from a given checkpoint are
    returned as they are. Returns the updated specs.
    """
    return [_continued(spec) for spec in specs]


def _continued(spec):
    folder = pathlib.Path(spec.out)
    if spec.resume is not None or not folder.is_dir() or spec.overwrite:
        return spec  # with overwrite, prepare_outputs removes the old run's files
    config = read_json(spec.path("config"))
    checkpoint = spec.path("checkpoint")
    if config is not None and not isinstance(config, dict):
        raise OutputError(
            f"{spec.path('config')} is damaged (not a JSON object); choose another --out or pass --overwrite"
        )
    if config is not None:
        config = upgrade_config(config)
        wanted = _identity(run_config(spec, build_model(spec), None))
        found = _identity(config)
        differ = [k for k in wanted if wanted[k] != found[k]]
        if differ:
            raise OutputError(
                f"{folder} holds a different run ({', '.join(differ)} differ); choose another --out or pass --overwrite"
            )
        metrics = _finished_metrics(spec)
        if metrics.get("epochs") == spec.epochs:
            return dataclasses.replace(spec, done=True)
        if isinstance(metrics.get("epochs"), int) and metrics["epochs"] > spec.epochs:
            raise _more_epochs(folder, "a finished run", metrics["epochs"], spec.epochs)
    if checkpoint.exists():
        done = ckpt_io.load(checkpoint).epoch  # an unreadable checkpoint is a one-line CheckpointError
        if done > spec.epochs:
            raise _more_epochs(folder, "a run", done, spec.epochs)
        return dataclasses.replace(spec, resume=str(checkpoint))
    return spec


def _finished_metrics(spec):
    """The run's checked ``metrics.json`` ({} if there is none); a damaged one is an :class:`OutputError`."""
    if not spec.path("metrics").exists():
        return {}
    try:
        return read_metrics(spec.path("metrics"))
    except MetricsProblem as exc:
        raise OutputError(
            f"{one_line(exc)}; remove it to judge the run again from its checkpoint, or pass --overwrite"
        ) from None


def _more_epochs(folder, what, done, asked):
    """The :class:`OutputError` for a folder whose run has more epochs than ``--epochs`` asks for."""
    return OutputError(
        f"{folder} holds {what} of {done} epochs; --epochs {asked} asks for fewer. Give --epochs {done} "
        "(or more) to keep or continue it, choose another --out, or pass --overwrite"
    )


def _identity(config):
    out = {k: config.get(k) for k in _IDENTITY}
    out["variant"] = out["variant"] or DEFAULT_VARIANT
    # The hyperparameters a resume may change are not the run's identity; those it names are compared once.
    params = {k: v for k, v in config.get("model_params", {}).items() if k not in _RECORDED + _IDENTITY}
    out["model_params"] = json.loads(json.dumps(jsonable(params), sort_keys=True))
    return out


# ---------------------------------------------------------------- a command's request


@dataclasses.dataclass
class Request:
    """What one ``run_mnist.py`` command asks for: its options, and which of them the user gave.

    The fields are the command's options (``batch_size`` is ``--batch``;
    ``model`` may be ``both``; ``out`` None is ``results/mnist/<timestamp>``). ``given`` maps each
    option the user set, typed or from the environment, to how they said it
    (``--seed 5``, ``UNTAPPED_SEED=5 (from the environment)``): a resumed run
    takes its settings from the checkpoint, and only the given options
    override them, or are refused if they contradict it. ``interactive``
    shows a progress bar instead of the log's lines (one run at a time only).
    """

    model: str
    variant: str
    trials: int
    seed: int
    epochs: int
    batch_size: int
    eval_every: int
    mode: str
    subset: int
    data_dir: str
    out: str
    resume: str
    overwrite: bool
    jobs: int
    backend: str
    scheduler: str
    command: str = None
    interactive: bool = False
    given: dict = dataclasses.field(default_factory=dict)


def plan_request(request, echo=None):
    """The runs of ``request``, each matched to what its folder holds, and the backend they run on.

    Returns ``(specs, backend)``. Raises :class:`ExperimentError` (one line)
    on options that do not go together, before anything is fitted or written.
    ``echo`` receives the lines of a scheduler's check (:func:`untapped.experiment.scheduler.check`).
    """
    backend = _backend(request, echo)
    if request.resume is not None:
        return [_resume_spec(request)], backend
    models = list(MODELS) if request.model == "both" else [request.model]
    last = request.seed + request.trials - 1
    if last > MAX_SEED:
        raise ExperimentError(
            f"--seed {request.seed} with --trials {request.trials} needs seeds up to {last}; the largest is {MAX_SEED}"
        )
    one_at_a_time = request.interactive and request.jobs == 1
    specs = plan_runs(
        models,
        range(request.seed, last + 1),
        request.out if request.out is not None else default_out(),
        variant=request.variant,
        command=request.command,
        **{k: getattr(request, k) for k in SCHEDULE},
        data_dir=str(request.data_dir) if request.data_dir is not None else None,
        subset=request.subset,
        overwrite=request.overwrite,
        progress=one_at_a_time,
        echo=not one_at_a_time,
    )
    return continue_runs(specs), backend


def default_out():
    """``results/mnist/<timestamp>``: the output folder of a command that names none."""
    return str(pathlib.Path("results") / "mnist" / time.strftime("%Y-%m-%d-%H-%M-%S"))


def _backend(request, echo=None):
    """The request's backend: ``dask`` with a scheduler (checked to answer), else the one asked for."""
    if request.scheduler is None and request.backend != "dask":
        return request.backend
    if request.backend != "dask" and "backend" in request.given:
        raise ExperimentError(f"--scheduler runs the trials on Dask; drop --backend {request.backend}")
    scheduler.check(request.scheduler, echo)  # before anything is fitted or written
    return "dask"


def _resume_spec(request):
    """The spec of ``--resume``: the checkpoint's run, with the options the user gave, refused where they
    contradict it."""
    if request.trials != 1:
        raise ExperimentError("--resume continues one run; leave --trials at 1")
    given = request.given
    if "model" in given and request.model == "both":
        raise ExperimentError("--resume continues one run; give --model untapped or m2, or omit it")
    conflicts = {name: getattr(request, name) for name in _IDENTITY if name in given}

    def if_given(name):
        return getattr(request, name) if name in given else None

    return plan_resume(
        request.resume,
        given=conflicts,
        labels={name: given[name] for name in conflicts},
        out=if_given("out"),
        epochs=if_given("epochs"),
        eval_every=if_given("eval_every"),
        mode=if_given("mode"),
        data_dir=str(request.data_dir) if request.data_dir is not None else None,
        overwrite=request.overwrite,
        command=request.command,
        progress=request.interactive,
        echo=not request.interactive,
    )
