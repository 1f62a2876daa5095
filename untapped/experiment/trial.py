"""One run end to end: train it, checkpointing every epoch, then judge it as the paper does.

A *run* is one model (``untapped`` or ``m2``) trained with one seed. The seed
drives the data split (:func:`untapped.data.make_split`), the initial weights,
the noise generators and the epoch shuffles. :func:`run_trial` trains it
(:func:`untapped.training.fit`), then judges it the way the paper does (§3;
:mod:`untapped.evaluation`):

* Figure 2: the 10 one-hot ``y`` decoded at ``z_bar``, the mean of the
  deterministic ``z`` over the labeled set (``model.encode(labeled_x,
  labeled_y).mean(0)``); the decoder means (``digits_means.png``) and the
  original's thresholded double pass (``digits_double_pass.png``,
  ``plotting_mnist.py:61-70``);
* the discriminative metric: the logistic-regression digit classifier
  (fitted on all 70,000 binarised images, cached) scores the 10 canonical
  images (the decoder means), the paper's assignment turns its scores into a
  permutation of the dimensions, and the cross-entropy and accuracy of the
  permuted ``q(y|x)`` are measured on every image of the digits 5-9.

When the run ends, its model's graph is freed (:meth:`untapped.model.SSDGM.free_graph`),
so the next run in the process trains without it.
"""

import json
import sys
import time
from collections import OrderedDict

import numpy as np

import untapped
from untapped import checkpoint as ckpt_io
from untapped.experiment.environment import source_commit
from untapped.experiment.folder import OutputError, lock_folder, prepare_outputs, result_from_metrics, write_json
from untapped.experiment.inputs import data_location, digit_classifier, load_split
from untapped.experiment.spec import build_model, check_spec, run_config
from untapped.files import jsonable, one_line
from untapped.presets import TITLES
from untapped.training import TrainingDiverged, TrainingInterrupted, fit


def run_trial(spec, classifier=None):
    """Train, checkpoint and judge one run; returns its result (a JSON-able dict).

    ``classifier`` is the digit classifier (default: :func:`digit_classifier`
    for the spec's data). A diverged run is not an exception here: its result
    has ``status='diverged'`` and the message, and its last good checkpoint
    stays on disk. Ctrl-C raises :class:`untapped.training.TrainingInterrupted`
    after saving.
    """
    check_spec(spec)
    with lock_folder(spec.out):
        return _run_locked(spec, classifier)


def _run_locked(spec, classifier):
    resume = ckpt_io.load(spec.resume) if spec.resume is not None else None
    if resume is not None and resume.epoch > spec.epochs:  # refused before anything of the run is written
        raise OutputError(
            f"{spec.resume} is at epoch {resume.epoch}, past the {spec.epochs} epochs asked for; "
            f"give --epochs {resume.epoch} or more"
        )
    prepare_outputs([spec])
    location = data_location(spec.data_dir)
    split = load_split(location, spec.seed, spec.subset, spec.variant)
    model = build_model(spec, resume)
    config = run_config(spec, model, location)
    write_json(spec.path("config"), config)
    log = _Log(spec)
    try:
        log(f"untapped {untapped.__version__}: {spec.name}, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        log("config " + json.dumps(jsonable(config), sort_keys=True), echo=False)
        if resume is not None:
            log(f"resuming from {spec.resume} at epoch {resume.epoch}")
        diverged = _train(spec, model, split, resume, config, log)
        if diverged is not None:
            return _result(spec, status="diverged", message=str(diverged), epochs=diverged.epoch)
        if classifier is None:
            classifier = digit_classifier(location, spec.subset, spec.classifier_cache, say=log.phase)
        log.phase("judging: Figure 2 and the metric on digits 5-9")
        began = time.perf_counter()
        metrics = _judge_and_record(spec, model, split, classifier, config, resume, log)
        log.phase(f"judged in {time.perf_counter() - began:.1f} s")
        return result_from_metrics(metrics, spec.out)
    finally:
        log.close()
        model.free_graph()  # this process will not train this graph again: its memory goes now


def _result(spec, status, message, **more):
    return OrderedDict(
        model=spec.model, seed=spec.seed, variant=spec.variant, run_dir=spec.out, status=status, message=message, **more
    )


class _Log:
    """Appends lines to the run's ``log.txt`` and, with ``echo``, prints them prefixed with the run's name.

    :meth:`phase` lines (a phase begins or ends) are also printed under a
    progress bar, on stderr, as the bar is not showing then.
    """

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

    def phase(self, line):
        self(line)
        if self.spec.progress and not self.spec.echo:
            print(f"[{self.spec.name}] {line}", file=sys.stderr, flush=True)

    def close(self):
        self.file.close()


# ---------------------------------------------------------------- training


def _train(spec, model, split, resume, config, log):
    """Train, checkpointing every epoch, and write the history; the :class:`TrainingDiverged` if it diverged, else None.

    The schedule is the model's (:func:`untapped.experiment.build_model` gave it the spec's).
    """
    try:
        fit(
            model,
            split,
            checkpoint_path=spec.path("checkpoint"),
            resume=resume,
            config={k: v for k, v in config.items() if k != "model_params"},
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
        return exc
    write_json(spec.path("history"), model.history_)
    save_curves(spec, model.history_)
    return None


def save_curves(spec, history):
    """The run's ``curves.png``: every term per epoch, training and evaluation."""
    from untapped.study.figures import save_run_curves
    from untapped.study.runs import ReportError

    try:
        save_run_curves(history, spec.path("curves"), f"{spec.name}: the five terms and the total per epoch")
    except ReportError as exc:
        raise OutputError(str(exc)) from None


# ---------------------------------------------------------------- judging


def canonical_images(model, split):
    """Figure 2: the 10 one-hot ``y`` decoded at ``z_bar`` (the original's ``plotting_mnist.py:61-70``).

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
    """The paper's discriminative metric on digits 5-9, for both assignments and both kinds of images.

    Returns the canonical images (:func:`canonical_images`), the metric per
    ``<kind>/<method>``, the cross-entropy of the unpermuted ``q(y|x)``, and
    the metric under every reading of :data:`untapped.evaluation.READINGS`.
    """
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
    """The run's Figure 2, ``digits_means.png`` and ``digits_double_pass.png``, each one-hot titled with its digit."""
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


def _judge_and_record(spec, model, split, classifier, config, resume, log):
    """Judge the trained model, draw Figure 2, write ``metrics.json``; returns the metrics."""
    images, results, unpermuted, readings = judge(model, split, classifier)
    save_figures(spec, images, results)
    main = results["means/original"]
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
            (k[len("eval/"):], v[-1]) for k, v in model.history_.items() if k.startswith("eval/") and v
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
    return metrics


def _metric_summary(result):
    return OrderedDict(
        cross_entropy=result["cross_entropy"],
        accuracy=result["accuracy"],
        recognised=result["recognised"],
        labels=result["labels"],
        probabilities=result["probabilities"],
        method=result["method"],
    )
