"""One MNIST run end to end, and many of them: what ``run_mnist.py`` calls.

A *run* is one model (``untapped`` or ``m2``) trained with one seed. The seed
drives the data split (:func:`untapped.data.make_split`), the initial weights,
the noise generators and the epoch shuffles. :func:`run_trial` trains it
(:func:`untapped.training.fit`, checkpointing every epoch), then judges it
the way the paper does (§3; :mod:`untapped.evaluation`):

* Figure 2: the 10 one-hot ``y`` decoded at ``z_bar``, the mean of the
  deterministic ``z`` over the labeled set (``model.encode(labeled_x,
  labeled_y).mean(0)``); the decoder means (``digits_means.png``) and the
  original's thresholded double pass (``digits_double_pass.png``,
  ``original_code.md`` §6.1);
* the discriminative metric: the logistic-regression digit classifier
  (fitted on all 70,000 binarised images, cached) scores the 10 canonical
  images (the decoder means), the paper's assignment turns its scores into a
  permutation of the dimensions, and the cross-entropy and accuracy of the
  permuted ``q(y|x)`` are measured on every image of the digits 5-9.

Files of a run, in ``<out>/<model>-seed<seed>/`` (:data:`RUN_FILES`):
``config.json``, ``checkpoint.h5`` (:mod:`untapped.checkpoint`),
``history.json``, ``curves.png``, ``log.txt``, ``digits_means.png``,
``digits_double_pass.png`` and ``metrics.json``. :func:`write_summary`
adds ``summary.json`` and ``summary.txt`` to ``<out>``.

Every failure a user can cause (data, checkpoint, output folder, option
conflicts) is an :class:`ExperimentError`, :class:`untapped.data.DataError`,
:class:`untapped.checkpoint.CheckpointError` or
:class:`untapped.training.TrainingError`, each with a one-line message.
"""

import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np

import untapped
from untapped import checkpoint as ckpt_io
from untapped import data as data_io
from untapped.backend import DEFAULT_MODE, MODES, environment
from untapped.training import TrainingDiverged, TrainingInterrupted, fit
from untapped.files import FolderLock, FolderLocked, atomic_output, jsonable, one_line
from untapped.presets import DEFAULT_VARIANT, MODELS, TITLES, VARIANTS, upgrade_params

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

#: Rows of a split cut by :func:`subset_split`.
_SUBSET_FIELDS = {
    "labeled": ("labeled_x", "labeled_y", "labeled_digits", "labeled_index"),
    "eval": ("eval_x", "eval_y", "eval_digits", "eval_index"),
    "unlabeled": ("unlabeled_x", "unlabeled_index", "unlabeled_digits"),
}


class ExperimentError(Exception):
    """A run cannot start or finish as asked (bad options, output folder); one-line message."""


class OutputError(ExperimentError):
    """The output folder cannot be created or written, or would overwrite a run."""


# ---------------------------------------------------------------- specs


@dataclasses.dataclass
class RunSpec:
    """Everything :func:`run_trial` needs; picklable, so trials can run in other processes.

    ``out`` is the run's own folder. ``subset`` keeps only the first
    ``subset`` rows of the labeled, evaluation and unlabeled sets (for quick
    tests). ``resume`` is a checkpoint path to continue from; ``epochs`` is
    then the total. ``classifier_cache`` is the digit classifier's cache
    folder (None: :func:`untapped.evaluation.default_cache_dir`).
    ``model_params`` are extra :class:`untapped.model.SSDGM` hyperparameters.
    """

    model: str = "untapped"
    seed: int = 1234
    epochs: int = 150
    batch: int = 10000
    eval_every: int = 10
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

    def path(self, key):
        return pathlib.Path(self.out) / RUN_FILES[key]


def run_name(model, seed, variant=DEFAULT_VARIANT):
    """``<model>-seed<seed>``, or ``<model>-<variant>-seed<seed>`` for a variant other than ``code``."""
    return f"{model}-seed{seed}" if variant == DEFAULT_VARIANT else f"{model}-{variant}-seed{seed}"


def check_variant(variant, models):
    if variant not in VARIANTS:
        raise ExperimentError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    wrong = [m for m in models if m not in VARIANTS[variant].models]
    if wrong:
        raise ExperimentError(
            f"--variant {variant} applies to {', '.join(VARIANTS[variant].models)} only, not {', '.join(wrong)}"
        )


def plan_runs(models, seeds, out, variant=DEFAULT_VARIANT, **options):
    """One :class:`RunSpec` per seed and model (seed-major), each in ``<out>/<run_name>``."""
    for model in models:
        if model not in MODELS:
            raise ExperimentError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
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
    missing = [k for k in ("model", "seed", "batch", "epochs", "eval_every") if k not in config]
    if missing:
        raise ckpt_io.CheckpointError(f"{path}: no run configuration ({', '.join(missing)}) in the checkpoint")
    for key, value in (given or {}).items():
        if value is not None and config.get(key, DEFAULT_VARIANT if key == "variant" else None) != value:
            said = (labels or {}).get(key, f"--{key.replace('_', '-')} {value}")
            raise ExperimentError(f"{said} conflicts with the checkpoint's {config.get(key)}; omit it when resuming")
    recorded = ("epochs", "eval_every", "mode", "data_dir")
    settings = {k: config.get(k) for k in recorded}
    settings.update({k: v for k, v in options.items() if k in recorded and v is not None})
    if settings["data_dir"] is not None and not pathlib.Path(settings["data_dir"]).exists():
        settings["data_dir"] = None  # the recorded folder is gone: search as usual
    if int(settings["epochs"]) < ckpt.epoch:
        raise ExperimentError(
            f"the checkpoint has {ckpt.epoch} epochs done; --epochs {settings['epochs']} asks for fewer"
        )
    variant = config.get("variant", DEFAULT_VARIANT)
    folder = pathlib.Path(out) / run_name(config["model"], config["seed"], variant) if out is not None else pathlib.Path(path).resolve().parent
    model_params = {k: v for k, v in upgrade_params(config.get("model_params", {})).items() if k not in ("epochs", "eval_every", "mode")}
    return RunSpec(
        model=config["model"],
        seed=int(config["seed"]),
        batch=int(config["batch"]),
        subset=config.get("subset"),
        out=str(folder),
        resume=str(path),
        model_params=model_params,
        variant=variant,
        **{k: settings[k] for k in recorded},
        **{k: v for k, v in options.items() if k not in recorded and v is not None},
    )


# ---------------------------------------------------------------- continuing


#: Settings that make two runs the same run (besides the epochs, which a resume may extend).
_IDENTITY = ("model", "seed", "batch", "subset", "variant")
_SCHEDULE_PARAMS = ("epochs", "eval_every", "mode", "batch_size")


def _identity(config):
    out = {k: config.get(k) for k in _IDENTITY}
    out["variant"] = out["variant"] or DEFAULT_VARIANT
    params = {k: v for k, v in upgrade_params(config.get("model_params", {})).items() if k not in _SCHEDULE_PARAMS}
    out["model_params"] = json.loads(json.dumps(jsonable(params), sort_keys=True))
    return out


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def continue_runs(specs):
    """Match each run's folder to its spec, so that running the same command again continues it.

    Per spec, by what its folder holds:

    * nothing of a run: a fresh run;
    * a run of the same configuration (model, seed, batch, subset, variant,
      hyperparameters) that finished with ``spec.epochs`` epochs
      (``metrics.json``): ``done``, it is not run again;
    * the same run with a checkpoint (interrupted, or finished with fewer
      epochs): it resumes from the checkpoint;
    * a different run, or one with more epochs than asked: :class:`OutputError`.

    With ``spec.overwrite`` the folder's run files are removed and the run
    starts afresh. Specs that already resume from a given checkpoint are
    returned as they are. Returns the updated specs.
    """
    planned = []
    for spec in specs:
        folder = pathlib.Path(spec.out)
        if spec.resume is not None or not folder.is_dir():
            planned.append(spec)
            continue
        if spec.overwrite:
            planned.append(spec)  # prepare_outputs removes the old run's files
            continue
        config = _read_json(spec.path("config"))
        checkpoint = spec.path("checkpoint")
        if config is None:
            if checkpoint.exists():
                planned.append(dataclasses.replace(spec, resume=str(checkpoint)))
            else:
                planned.append(spec)
            continue
        wanted = _identity(run_config(spec, build_model(spec), None))
        found = _identity(config)
        differ = [k for k in wanted if wanted[k] != found[k]]
        if differ:
            raise OutputError(
                f"{folder} holds a different run ({', '.join(differ)} differ); choose another --out or pass --overwrite"
            )
        metrics = _read_json(spec.path("metrics")) or {}
        if metrics.get("epochs") == spec.epochs:
            planned.append(dataclasses.replace(spec, done=True))
        elif checkpoint.exists():
            planned.append(dataclasses.replace(spec, resume=str(checkpoint)))
        else:
            planned.append(spec)
    return planned


def remove_run_files(folder):
    """Delete the files of a run (:data:`RUN_FILES`) and stale temporary files from ``folder``."""
    folder = pathlib.Path(folder)
    for name in RUN_FILES.values():
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputError(f"cannot remove {folder / name} ({one_line(exc)})") from None
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def finished_result(spec):
    """The result of a run that finished earlier, read from its ``metrics.json``."""
    metrics = _read_json(spec.path("metrics"))
    if metrics is None:
        raise OutputError(f"cannot read {spec.path('metrics')}")
    return result_from_metrics(metrics, spec.out)


def result_from_metrics(metrics, run_dir):
    return OrderedDict(
        model=metrics["model"],
        seed=metrics["seed"],
        variant=metrics.get("variant", DEFAULT_VARIANT),
        run_dir=str(run_dir),
        status="ok",
        message="",
        epochs=metrics["epochs"],
        cross_entropy=metrics["cross_entropy"],
        accuracy=metrics["accuracy"],
        recognised=[int(d) for d in metrics["recognised"]],
        labels=[int(d) for d in metrics["labels"]],
    )


def source_commit():
    """The git commit of the untapped source tree (``+dirty`` with uncommitted changes), or None."""
    import subprocess

    where = pathlib.Path(untapped.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


# ---------------------------------------------------------------- output


def prepare_outputs(specs):
    """Create every run folder and check it is writable; refuse to overwrite another run.

    Raises :class:`OutputError` before anything is trained, so a bad ``--out``
    costs nothing and destroys nothing. With ``overwrite`` the folder's run
    files are removed first (except when the spec resumes from a checkpoint
    in that folder).
    """
    for spec in specs:
        folder = pathlib.Path(spec.out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise OutputError(f"cannot write to the output folder {folder} ({one_line(exc)})") from None
        target = spec.path("checkpoint")
        if spec.overwrite and not (spec.resume is not None and _same_file(pathlib.Path(spec.resume).parent, folder)):
            remove_run_files(folder)  # --overwrite replaces the run whole: no stale file is left
        if target.exists() and not spec.overwrite and not spec.done:
            if spec.resume is None or not _same_file(spec.resume, target):
                raise OutputError(
                    f"{folder} already holds a run ({target.name}); resume it with --resume {target}, "
                    "choose another --out, or pass --overwrite"
                )


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file + rename)."""
    path = pathlib.Path(path)
    text = json.dumps(jsonable(obj), indent=2) + "\n"
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({one_line(exc)})") from None
    return path


# ---------------------------------------------------------------- data


def data_location(data_dir=None):
    """Where MNIST will be read from (see :func:`untapped.data.find_mnist`); may download."""
    return data_io.find_mnist(data_dir)


def load_images(data_dir=None):
    """All 70,000 binarised images and their digits, read and verified (about a second).

    Nothing is kept: a run holds its split (:func:`load_split`), not the
    70,000 images as well (another 220 MB while it trains).
    """
    return data_io.load_binarized_mnist(data_location(data_dir), download=False)


def subset_split(split, n):
    """``split`` with only the first ``n`` rows of its labeled, evaluation and unlabeled sets."""
    if n is None:
        return split
    n = int(n)
    if n < 1:
        raise ExperimentError(f"--subset must be at least 1, got {n}")
    changes = {name: getattr(split, name)[:n] for fields in _SUBSET_FIELDS.values() for name in fields}
    return dataclasses.replace(split, **changes)


def load_split(data_dir=None, seed=1234, subset=None, variant=DEFAULT_VARIANT):
    """The paper's split for ``seed`` (:func:`untapped.data.make_split`, with the variant's options), cut to ``subset`` rows."""
    images, digits = load_images(data_dir)
    return subset_split(data_io.make_split(images, digits, seed=seed, **VARIANTS[variant].split), subset)


def classifier_data(images, digits, subset=None):
    """The images and digits the digit classifier is fitted on.

    All 70,000 binarised images (paper §3: "pre-trained on the entire
    dataset"); with ``subset`` (quick tests) only the first ``subset`` images
    of each digit, so that every digit is still present.
    """
    if subset is None:
        return images, digits
    rows = np.concatenate([np.flatnonzero(digits == d)[: int(subset)] for d in range(data_io.NUM_CLASSES)])
    rows.sort()
    return images[rows], digits[rows]


def digit_classifier(data_dir=None, subset=None, cache_dir=None, images=None):
    """The paper's logistic-regression digit classifier (:func:`untapped.evaluation.digit_classifier`), cached.

    ``images`` are :func:`load_images`'s ``(images, digits)`` if the caller
    has them already; else they are read from ``data_dir``.
    """
    from untapped import evaluation

    images, digits = load_images(data_dir) if images is None else images
    return evaluation.digit_classifier(*classifier_data(images, digits, subset), cache_dir=cache_dir)


# ---------------------------------------------------------------- judging a model


def canonical_images(model, split):
    """Figure 2: the 10 one-hot ``y`` decoded at ``z_bar`` (``original_code.md`` §6.1).

    ``z_bar = model.encode(labeled_x, labeled_y).mean(0)``, the deterministic
    z averaged over the labeled set. Returns ``z_bar``, ``means`` (the decoder
    means, the paper's caption) and ``double_pass`` (the original's
    thresholded, re-encoded and re-decoded images).
    """
    z_bar = np.asarray(model.encode(split.labeled_x, split.labeled_y)).mean(axis=0)
    y = np.eye(model.n_classes, dtype=np.float32)
    z = np.tile(z_bar, (model.n_classes, 1)).astype(np.float32)
    return OrderedDict(
        z_bar=z_bar,
        means=np.asarray(model.generate(y, z)),
        double_pass=np.asarray(model.generate(y, z, threshold=True, double_pass=True)),
    )


def judge(model, split, classifier):
    """The paper's discriminative metric on digits 5-9, for both assignments and both kinds of images."""
    from untapped import evaluation

    images = canonical_images(model, split)
    q = np.asarray(model.predict_proba(split.eval_x), dtype=np.float64)
    results = OrderedDict()
    for kind in ("means", "double_pass"):
        for method in ("original", "hungarian"):
            results[f"{kind}/{method}"] = evaluation.discriminative_metric(
                images[kind], classifier, q, split.eval_digits, method=method
            )
    unpermuted = evaluation.cross_entropy(q, split.eval_digits)
    canonical = {kind: images[kind] for kind in ("means", "double_pass")}
    readings = evaluation.metric_readings(canonical, classifier, q, split.eval_digits)
    return images, results, unpermuted, readings


def save_figures(spec, images, results):
    from untapped import evaluation

    title = TITLES.get(spec.model, spec.model)
    for key, kind, what in (
        ("figure", "means", "decoder means at z_bar"),
        ("figure_double_pass", "double_pass", "thresholded double pass at z_bar (original's make_plots)"),
    ):
        recognised = results[f"{kind}/original"]["recognised"]
        titles = [f"y={k} \u2192 {d}" for k, d in enumerate(recognised)]
        try:
            evaluation.save_digit_grid(images[kind], spec.path(key), titles=titles, suptitle=f"{title}: {what}")
        except OSError as exc:
            raise OutputError(f"cannot write {spec.path(key)} ({one_line(exc)})") from None


def save_curves(spec, history):
    """The run's ``curves.png``: every term per epoch, training and evaluation."""
    from untapped.report import ReportError, save_run_curves

    try:
        save_run_curves(history, spec.path("curves"), f"{spec.name}: the five terms and the total per epoch")
    except ReportError as exc:
        raise OutputError(str(exc)) from None


def _metric_summary(result):
    return OrderedDict(
        cross_entropy=result["cross_entropy"],
        accuracy=result["accuracy"],
        recognised=result["recognised"],
        labels=result["labels"],
        probabilities=result["probabilities"],
        method=result["method"],
    )


# ---------------------------------------------------------------- one run


def build_model(spec, resume=None):
    from untapped.model import SSDGM

    if resume is not None:
        params = upgrade_params(resume.config.get("model_params", {}))
        params.update(spec.model_params)
        params.update(epochs=spec.epochs, eval_every=spec.eval_every, mode=spec.mode, batch_size=spec.batch)
        try:
            return SSDGM(**params)
        except TypeError as exc:
            raise ckpt_io.CheckpointError(f"{spec.resume}: model parameters do not fit this untapped ({one_line(exc)})") from None
    variant = VARIANTS[spec.variant].model_params(spec.model) if spec.variant in VARIANTS else {}
    return SSDGM.from_preset(
        spec.model,
        seed=spec.seed,
        batch_size=spec.batch,
        epochs=spec.epochs,
        eval_every=spec.eval_every,
        mode=spec.mode,
        **{**variant, **spec.model_params},
    )


def run_config(spec, model, location):
    return OrderedDict(
        model=spec.model,
        seed=spec.seed,
        epochs=spec.epochs,
        batch=spec.batch,
        eval_every=spec.eval_every,
        subset=spec.subset,
        mode=spec.mode,
        data_dir=str(pathlib.Path(location).resolve()) if location is not None else None,
        resumed_from=spec.resume,
        untapped_version=untapped.__version__,
        variant=spec.variant,
        commit=source_commit() if location is not None else None,
        command=spec.command,
        model_params=model.get_params(),
    )


class _Log:
    """Appends lines to the run's ``log.txt`` and, with ``echo``, prints them prefixed with the run's name."""

    def __init__(self, spec):
        self.spec = spec
        try:
            self.file = open(spec.path("log"), "a", buffering=1)
        except OSError as exc:
            raise OutputError(f"cannot write {spec.path('log')} ({one_line(exc)})") from None

    def __call__(self, line, echo=True):
        self.file.write(line + "\n")
        if self.spec.echo and echo:
            print(f"[{self.spec.name}] {line}", flush=True)

    def close(self):
        self.file.close()


def run_trial(spec, classifier=None):
    """Train, checkpoint and judge one run; returns its result (a JSON-able dict).

    ``classifier`` is the digit classifier (default: :func:`digit_classifier`
    for the spec's data). A diverged run is not an exception here: its result
    has ``status='diverged'`` and the message, and its last good checkpoint
    stays on disk. Ctrl-C raises :class:`untapped.training.TrainingInterrupted`
    after saving.
    """
    if spec.model not in MODELS:
        raise ExperimentError(f"unknown model {spec.model!r}; choose from {', '.join(MODELS)}")
    if spec.mode not in MODES:
        raise ExperimentError(f"unknown mode {spec.mode!r}; choose from {', '.join(MODES)}")
    with lock_folder(spec.out):
        return _run_locked(spec, classifier)


def lock_folder(folder):
    """:class:`untapped.files.FolderLock` on ``folder``, its refusal as an :class:`OutputError`."""
    lock = FolderLock(folder)
    try:
        return lock.acquire()
    except FolderLocked as exc:
        raise OutputError(f"{exc}; wait for it to finish, or choose another --out") from None
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {folder} ({one_line(exc)})") from None


def _run_locked(spec, classifier):
    resume = ckpt_io.load(spec.resume) if spec.resume is not None else None
    prepare_outputs([spec])
    location = data_location(spec.data_dir)
    split = load_split(location, spec.seed, spec.subset, spec.variant)
    model = build_model(spec, resume)
    config = run_config(spec, model, location)
    write_json(spec.path("config"), config)
    log = _Log(spec)
    result = OrderedDict(model=spec.model, seed=spec.seed, variant=spec.variant, run_dir=spec.out, status="ok", message="")
    try:
        log(f"untapped {untapped.__version__}: {spec.name}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        log("config " + json.dumps(jsonable(config), sort_keys=True), echo=False)
        if resume is not None:
            log(f"resuming from {spec.resume} at epoch {resume.epoch}")
        checkpoint_config = {k: v for k, v in config.items() if k != "model_params"}
        try:
            fit(
                model,
                split,
                epochs=spec.epochs,
                batch_size=spec.batch,
                eval_every=spec.eval_every,
                checkpoint_path=spec.path("checkpoint"),
                resume=resume,
                config=checkpoint_config,
                progress=spec.progress,
                log=log,
                label=spec.name,
            )
        except TrainingInterrupted as exc:
            log(f"interrupted: {exc}")
            write_json(spec.path("history"), getattr(model, "history_", {}))
            raise
        except TrainingDiverged as exc:
            log(f"diverged: {exc}")
            write_json(spec.path("history"), getattr(model, "history_", {}))
            result.update(status="diverged", message=str(exc), epochs=exc.epoch)
            return result
        write_json(spec.path("history"), model.history_)
        save_curves(spec, model.history_)
        if classifier is None:
            classifier = digit_classifier(location, spec.subset, spec.classifier_cache)
        images, results, unpermuted, readings = judge(model, split, classifier)
        save_figures(spec, images, results)
        main = results["means/original"]
        history = model.history_
        metrics = OrderedDict(
            model=spec.model,
            seed=spec.seed,
            variant=spec.variant,
            commit=source_commit(),
            command=spec.command,
            started_with=config.get("commit") if resume is None else (resume.config or {}).get("commit"),
            epochs=model.epoch_,
            canonical="means",
            method="original",
            cross_entropy=main["cross_entropy"],
            accuracy=main["accuracy"],
            recognised=main["recognised"],
            labels=main["labels"],
            unpermuted_cross_entropy=unpermuted,
            z_bar=images["z_bar"],
            final_eval=OrderedDict(
                (k[len("eval/"):], v[-1]) for k, v in history.items() if k.startswith("eval/") and v
            ),
            all=OrderedDict((k, _metric_summary(v)) for k, v in results.items()),
            readings=readings,
            eval_rows=len(split.eval_x),
        )
        write_json(spec.path("metrics"), metrics)
        log(
            f"cross-entropy on digits 5-9 {main['cross_entropy']:.4f}, accuracy {main['accuracy']:.4f}, "
            f"one-hots show {' '.join(str(d) for d in main['recognised'])}"
        )
        result.update(
            epochs=model.epoch_,
            cross_entropy=main["cross_entropy"],
            accuracy=main["accuracy"],
            recognised=[int(d) for d in main["recognised"]],
            labels=[int(d) for d in main["labels"]],
        )
        return result
    finally:
        log.close()
        model.free_graph()  # this process will not train this graph again: its memory goes now


# ---------------------------------------------------------------- many runs


def run_trials(specs, jobs=1, backend="loky", classifier=None, scheduler=None):
    """Run every spec; in this process one after another if ``jobs == 1``, else with joblib.

    A spec marked ``done`` (:func:`continue_runs`) is not run: its result is
    read from its ``metrics.json``. ``backend`` is any joblib backend name
    (``loky``, ``multiprocessing``, ...), or ``dask``: one Dask task per run
    on the scheduler at ``scheduler``, else on a local cluster, whatever
    ``jobs`` is (:func:`untapped.cluster.run_trials`). Returns the results in
    the order of ``specs``.
    """
    if backend == "dask":
        from untapped import cluster

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
    """``model``, or ``model/variant`` for a variant other than ``code``."""
    variant = result.get("variant", DEFAULT_VARIANT)
    return result["model"] if variant == DEFAULT_VARIANT else f"{result['model']}/{variant}"


def summary_table(results):
    """The end-of-run table: per model and seed, the cross-entropy on 5-9 and each one-hot's digit; then mean +- sd."""
    width = max([9] + [len(_group(r)) for r in results])
    lines = [f"{'model':<{width}} {'seed':>6}  {'CE 5-9':>7}  {'acc':>6}  digit shown by y=0..9"]
    for r in results:
        if r.get("status") == "ok":
            digits = " ".join(str(d) for d in r["recognised"])
            lines.append(f"{_group(r):<{width}} {r['seed']:>6}  {r['cross_entropy']:>7.4f}  {r['accuracy']:>6.4f}  {digits}")
        else:
            lines.append(f"{_group(r):<{width}} {r['seed']:>6}  {r.get('status', '?'):>7}  {'':>6}  {r.get('message', '')}")
    for model, s in summary(results).items():
        if s["mean"] is None:
            lines.append(f"{model:<{width}} {'all':>6}  no finished runs")
        else:
            sd = "n/a" if s["sd"] is None else f"{s['sd']:.4f}"
            lines.append(f"{model:<{width}} {'mean':>6}  {s['mean']:.4f} +- {sd}  (n={s['ok']})")
    return "\n".join(lines)


def folder_results(out, results=()):
    """``results``, then the finished runs of every other run folder in ``out`` (from their ``metrics.json``).

    So a summary holds every run in the folder, whichever command wrote it.
    """
    results = list(results)
    seen = {pathlib.Path(r["run_dir"]).resolve() for r in results}
    for path in sorted(pathlib.Path(out).glob(f"*/{RUN_FILES['metrics']}")):
        if path.parent.resolve() in seen:
            continue
        metrics = _read_json(path)
        if metrics and all(k in metrics for k in ("model", "seed", "cross_entropy", "epochs")):
            results.append(result_from_metrics(metrics, path.parent))
    return results


def write_summary(out, results):
    """``summary.json`` and ``summary.txt`` in ``out``, of ``results`` and every other finished run there."""
    out = pathlib.Path(out)
    results = folder_results(out, results)
    write_json(out / "summary.json", OrderedDict(runs=results, summary=summary(results)))
    table = summary_table(results)
    try:
        (out / "summary.txt").write_text(table + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write {out / 'summary.txt'} ({one_line(exc)})") from None
    return table


# ---------------------------------------------------------------- environment


def describe_environment(mode=DEFAULT_MODE, location=None):
    """Lines describing versions, compile mode, BLAS, threads and the data source."""
    import pytensor

    env = environment(mode)
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    lines = [
        f"untapped {untapped.__version__}, python {env['python']} ({sys.executable})",
        f"versions: {versions}",
        f"mode: {mode} (linker {env['linker']}, floatX {env['floatX']}, compiledir {pytensor.config.compiledir})",
        f"blas__ldflags: {env['blas__ldflags'] or '(empty: PyTensor calls NumPy BLAS)'}",
        f"C flags: {env['cxxflags']}; vector math: {', '.join(env['vector_math'] or []) or 'none (scalar expf/logf)'}",
    ]
    try:
        from threadpoolctl import threadpool_info

        pools = "; ".join(
            f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)" for p in threadpool_info()
        )
    except Exception:  # threadpoolctl is optional
        pools = "unknown"
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    threads = {k: os.environ.get(k, "unset") for k in names}
    lines.append(
        f"threads: {os.cpu_count()} CPUs (untapped's row ops use OpenMP), "
        + ", ".join(f"{k}={v}" for k, v in threads.items())
        + f"; thread pools: {pools or 'none loaded'}"
    )
    if location is not None:
        kind = "mnist.pkl.gz" if pathlib.Path(location).is_file() else "IDX files"
        lines.append(f"data: {location} ({kind})")
    return lines
