"""The epoch loop of the original ``SSDGM.fit`` (``S2S_DGM.py:1572-1656``).

Per epoch (1-based, as the original's):

1. Shuffle every source and cut it into ``max_s ceil(N_s / batch_size)``
   batches (4 for MNIST at 10,000) at the epoch's learning rate, as the
   original's schedule (:mod:`untapped.schedule`). Each step is one call of
   the model's compiled training function on the batch's index vectors.
2. Record the mean over the epoch's steps of every training term
   (``train/<term>``), as the original's per-epoch record.
3. Every ``eval_every`` epochs, and after the last, evaluate all five terms on
   the evaluation sources (``DEMO_mnist.py:33-42``: digits 5-9 with their labels, the same
   unlabeled images, the same unfeatured y with the second z draw), shuffled
   by a separate generator (``shuffle/evaluate``) and cut into batches the
   same way; the record is the unweighted mean of the per-batch means
   (``eval/<term>``). Evaluation draws its noise from its own generators, so
   it never changes the training trajectory. The evaluation after the last
   epoch, when that epoch is off the schedule, draws from copies of the
   evaluation generators: the checkpoint keeps the schedule's streams, and
   a run resumed from it drops that evaluation from the history, so its
   history and checkpoint equal those of an uninterrupted run.
4. Check that every term and every parameter is finite, then write the
   checkpoint (every ``checkpoint_every`` epochs and after the last; a run
   of no epochs writes the state it starts from).

A non-finite term or parameter raises :class:`TrainingDiverged` right away
(the original's NaN check, without its ``IPython.embed()``); the last
checkpoint written is the last good state. Ctrl-C writes the state at the end
of the last completed epoch (so resuming is exact) and raises
:class:`TrainingInterrupted`.

:func:`fit` keeps what one call carries from epoch to epoch in a small
state object (:class:`_Training`); each step of the loop is a function of it.
"""

import dataclasses
import math
import sys
import time
from collections import OrderedDict

import numpy as np

from untapped import checkpoint as ckpt_io
from untapped.files import same_file
from untapped.presets import TERMS
from untapped.schedule import (
    SOURCES,
    batch_index,
    epoch_batches,
    epoch_permutations,
    evaluate,
    evaluate_aside,
    evaluation_sources,
    learning_rate,
    new_shuffle_generators,
    shuffle_seeds,
    source_sizes,
    steps_per_epoch,
    training_sources,
    without_evaluation_aside,
)


class TrainingError(Exception):
    """Training stopped; the message is one line."""


class TrainingDiverged(TrainingError):
    """A term or a parameter became NaN or infinite."""

    def __init__(self, message, epoch=None, checkpoint_path=None):
        super().__init__(message)
        self.epoch = epoch
        self.checkpoint_path = checkpoint_path


class TrainingInterrupted(TrainingError):
    """Ctrl-C; ``checkpoint_path`` holds the state after ``epoch`` completed epochs (or None)."""

    def __init__(self, message, epoch=None, checkpoint_path=None):
        super().__init__(message)
        self.epoch = epoch
        self.checkpoint_path = checkpoint_path


# ---------------------------------------------------------------- the loop


def fit(
    model,
    split,
    *,
    epochs=None,
    eval_every=None,
    checkpoint_path=None,
    checkpoint_every=1,
    resume=None,
    config=None,
    progress=False,
    log=None,
    label=None,
    evaluation=True,
):
    """Train ``model`` on ``split`` (an :class:`untapped.data.MNISTSplit` or alike); returns ``model``.

    Parameters
    ----------
    epochs, eval_every : default to the model's hyperparameters.
        ``epochs`` is the total, counting epochs done before a resume. The
        batch size is the model's ``batch_size`` alone: it makes the run
        what it is, where these only say how far it goes and how often it
        is evaluated.
    checkpoint_path : where to write the checkpoint (every ``checkpoint_every``
        epochs, after the last, and on Ctrl-C; with no epochs to train, the
        state training starts from); None writes nothing.
    resume : a :class:`untapped.checkpoint.Checkpoint` or a path: restore the
        model, generators, shuffles and history from it and continue after its
        epoch. Without it, training starts at epoch 1 from the model's current
        parameters with Adam's state reset to zero (as the original's ``fit``).
    config : extra JSON-able run options stored in the checkpoint.
    progress : show a click progress bar with ETA (on stderr).
    log : a callable receiving one line per epoch (and per evaluation).
    label : text shown before the progress bar.
    evaluation : evaluate on the split's evaluation sources (every
        ``eval_every`` epochs and after the last); False makes no evaluation,
        and the split needs no evaluation sources (``SSDGM.fit(X, y)``).

    After the call: ``model.history_`` (OrderedDict of per-epoch lists),
    ``model.epoch_`` (epochs completed), ``model.checkpoint_`` (the last
    :class:`~untapped.checkpoint.Checkpoint` written or restored, or None).

    Raises :class:`TrainingDiverged` on a NaN or infinite term or parameter,
    and :class:`TrainingInterrupted` on Ctrl-C (after saving the state at the
    end of the last completed epoch).
    """
    schedule = _schedule(model, epochs, eval_every, checkpoint_every)
    run = _begin(model, split, schedule, resume, config, log, checkpoint_path, evaluation)
    bar = _progress_bar(progress, (run.epochs - run.start) * run.steps, label)
    if run.epochs > run.start:
        _compile(run, bar)
    epoch = run.start
    try:
        for epoch in range(run.start + 1, run.epochs + 1):
            _train_epoch(run, epoch, bar)
            if run.evaluates(epoch):
                _evaluate_epoch(run, epoch)
            run.keep(epoch)
    except KeyboardInterrupt:
        raise run.interrupted(epoch) from None
    finally:
        if bar is not None:
            bar.render_finish()
    # The model holds the state of the last completed epoch; undo nothing.
    model.checkpoint_ = run.last_good
    return model


@dataclasses.dataclass
class _Training:
    """What one call of :func:`fit` carries from epoch to epoch.

    ``config`` goes into every checkpoint; ``sizes`` are the rows of each
    training source and ``steps`` the steps of an epoch; ``shuffles`` the
    ``shuffle/*`` generators; ``start`` the epochs done before this call.
    ``last_good`` is the :class:`~untapped.checkpoint.Checkpoint` of the last
    completed epoch, and ``saved`` says whether ``checkpoint_path`` holds it.
    """

    model: object
    split: object
    epochs: int
    batch_size: int
    eval_every: int
    checkpoint_every: int
    checkpoint_path: object
    evaluation: bool
    config: dict
    log: object
    sizes: OrderedDict
    steps: int
    shuffles: OrderedDict
    history: OrderedDict
    start: int
    last_good: object = None
    saved: bool = False

    def snapshot(self, epoch):
        """The checkpoint of the model's state after ``epoch`` epochs (nothing written)."""
        return ckpt_io.Checkpoint.from_model(
            self.model,
            epoch=epoch,
            rng=OrderedDict((k, g.bit_generator.state) for k, g in self.shuffles.items()),
            split=self.split,
            history=self.history,
            config=self.config,
        )

    def save(self):
        self.last_good.save(self.checkpoint_path)
        self.saved = True

    def evaluates(self, epoch):
        """Whether ``epoch`` ends with an evaluation: on the ``eval_every`` schedule, or the last."""
        return self.evaluation and (epoch % self.eval_every == 0 or epoch == self.epochs)

    def keep(self, epoch):
        """``epoch`` is complete and good: it becomes the last good state, written on the checkpoint schedule."""
        self.last_good = self.snapshot(epoch)
        self.saved = False
        self.model.epoch_ = epoch
        if self.checkpoint_path is not None and (epoch % self.checkpoint_every == 0 or epoch == self.epochs):
            self.save()
        self.model.checkpoint_ = self.last_good

    def diverged(self, message):
        """The :class:`TrainingDiverged` to raise, after writing the last good state if it is not written."""
        saved = None
        if self.checkpoint_path is not None:
            if not self.saved and self.last_good.epoch > 0:
                self.last_good.save(self.checkpoint_path)
            if self.saved or self.last_good.epoch > 0:
                saved = self.checkpoint_path
        if saved is not None:
            message += f"; training stopped, the last good state (epoch {self.last_good.epoch}) is in {saved}"
        else:
            message += "; training stopped"
        return TrainingDiverged(message, self.last_good.epoch, saved)

    def interrupted(self, epoch):
        """The :class:`TrainingInterrupted` to raise for Ctrl-C during ``epoch``, after writing the last good state."""
        saved = None
        if self.checkpoint_path is not None:
            if not self.saved:
                self.last_good.save(self.checkpoint_path)
            saved = self.checkpoint_path
        done = self.last_good.epoch
        where = f"; the state after epoch {done} is in {saved}" if saved else ""
        return TrainingInterrupted(f"interrupted during epoch {epoch}{where}", done, saved)


def _schedule(model, epochs, eval_every, checkpoint_every):
    """``epochs``, ``eval_every`` (the model's if None), the model's ``batch_size``, ``checkpoint_every``: checked."""
    epochs = int(model.epochs if epochs is None else epochs)
    batch_size = int(model.batch_size)
    eval_every = int(model.eval_every if eval_every is None else eval_every)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    return dict(epochs=epochs, batch_size=batch_size, eval_every=eval_every, checkpoint_every=checkpoint_every)


def _begin(model, split, schedule, resume, config, log, checkpoint_path, evaluation):
    """The state of a new call of :func:`fit`: the sources in the model, the shuffles, the history, restored
    from ``resume``."""
    run_config = dict(config or {})
    run_config.update(epochs=schedule["epochs"], batch_size=schedule["batch_size"], eval_every=schedule["eval_every"])
    train_arrays = training_sources(split)
    sizes = source_sizes(train_arrays)
    steps = steps_per_epoch(sizes, schedule["batch_size"])
    if evaluation:
        # fails early on an empty source
        steps_per_epoch(source_sizes(evaluation_sources(split)), schedule["batch_size"])
    shuffles = new_shuffle_generators(model.seed)
    if resume is not None:
        resume, history, start = _restore(model, split, resume, shuffles, schedule)
    else:
        _reset_optimizer(model)
        history, start = OrderedDict(), 0
    model.set_training_data(**train_arrays)
    run = _Training(
        model=model, split=split, **schedule, checkpoint_path=checkpoint_path, evaluation=evaluation,
        config=run_config, log=log or (lambda line: None), sizes=sizes, steps=steps, shuffles=shuffles,
        history=history, start=start,
    )
    run.last_good = resume if resume is not None else run.snapshot(0)
    run.saved = resume is not None and checkpoint_path is not None and resume.path is not None and \
        same_file(resume.path, checkpoint_path)
    model.history_ = history
    model.epoch_ = start
    model.checkpoint_ = resume
    model.compile_seconds_ = OrderedDict()
    if run.epochs == start and checkpoint_path is not None and not run.saved:
        run.save()  # every run writes its checkpoint, one of no epochs too (the initial state)
    return run


def _restore(model, split, resume, shuffles, schedule):
    """Restore the model and the shuffles from checkpoint ``resume`` (or its path);
    ``(checkpoint, history, epochs done)``."""
    if not isinstance(resume, ckpt_io.Checkpoint):
        resume = ckpt_io.load(resume)
    resume.check_split(split)
    resume.restore(model)
    for name, generator in shuffles.items():
        if name not in resume.rng:
            raise ckpt_io.CheckpointError(f"{resume.path or 'checkpoint'}: no state for generator {name}")
        generator.bit_generator.state = resume.rng[name]
    history = OrderedDict((k, list(v)) for k, v in resume.history.items())
    start = int(resume.epoch)
    epochs = schedule["epochs"]
    if start > epochs:
        raise ValueError(f"the checkpoint is at epoch {start}, past the requested total of {epochs} epochs")
    if epochs > start:
        written_every = int((resume.config or {}).get("eval_every", schedule["eval_every"]))
        history = without_evaluation_aside(history, start, written_every)
    return resume, history, start


def _compile(run, bar=None):
    """Compile before the clock starts, so epoch times are training times (compile times apart).

    A cold compile takes minutes: a line says so before it (and the progress
    bar shows it), and the line after gives its time.
    """
    names = ("train", "evaluate") if run.evaluation else ("train",)
    run.log(f"compiling {', '.join(names)} (minutes when PyTensor's compile cache is cold, seconds when warm)")
    if bar is not None:
        bar.current_item = "compiling"
        bar.render_progress()
    for name in names:
        began = time.perf_counter()
        run.model.graph.function(name)
        run.model.compile_seconds_[name] = time.perf_counter() - began
    run.log("compiled in " + ", ".join(f"{k} {v:.1f} s" for k, v in run.model.compile_seconds_.items()))
    if bar is not None:
        bar.start = bar.last_eta = time.time()  # the ETA counts training steps, not the compile


def _train_epoch(run, epoch, bar):
    """The steps of ``epoch``, recorded in the history; raises :class:`TrainingDiverged` on a non-finite term or
    parameter."""
    model = run.model
    lr = learning_rate(epoch, model.learning_rate, model.anneal_lr_factor, model.anneal_lr_epoch)
    began = time.perf_counter()
    per_step = OrderedDict()
    for step, index in enumerate(epoch_batches(run.shuffles["shuffle/train"], run.sizes, run.batch_size), 1):
        values = model.train_step(index["labeled"], index["unlabeled"], index["unfeatured"], lr)
        bad = _non_finite(values)
        if bad:
            raise run.diverged(f"epoch {epoch}, step {step}: non-finite training term(s) {', '.join(bad)}")
        for k, v in values.items():
            per_step.setdefault(k, []).append(v)
        if bar is not None:
            bar.update(1, current_item=(epoch, run.epochs, values["total"]))
    seconds = time.perf_counter() - began
    for key, value in (("epoch", epoch), ("learning_rate", lr), ("seconds", seconds)):
        _append(run.history, key, value)
    for k, v in per_step.items():
        _append(run.history, f"train/{k}", float(np.mean(v)))
    bad = [name for name, value in model.param_values_by_name().items() if not np.isfinite(value).all()]
    if bad:
        raise run.diverged(f"epoch {epoch}: non-finite parameter(s) {', '.join(bad[:3])}")
    run.log(_epoch_line(epoch, seconds, lr, per_step))


def _evaluate_epoch(run, epoch):
    """The evaluation after ``epoch``, recorded in the history; raises :class:`TrainingDiverged` on a non-finite
    term."""
    _free_step_buffers(run.model)
    on_schedule = epoch % run.eval_every == 0
    evaluation = evaluate if on_schedule else evaluate_aside
    values = evaluation(run.model, run.split, run.batch_size, run.shuffles["shuffle/evaluate"])
    _append(run.history, "eval/epoch", epoch)
    for k, v in values.items():
        _append(run.history, f"eval/{k}", v)
    run.log("  eval  " + "  ".join(f"{k}={v:.4f}" for k, v in values.items()))
    bad = _non_finite(values)
    if bad:
        raise run.diverged(f"epoch {epoch}: non-finite evaluation term(s) {', '.join(bad)}")


def _non_finite(values):
    return [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]


def _free_step_buffers(model):
    """Let the training step's kept buffers go before an evaluation, which needs memory of its own.

    The step keeps its intermediates between calls (``keep_buffers``,
    hundreds of MB at batch 10,000); held through an evaluation they would
    add to its peak. The next step allocates them afresh, as the first step
    of a run (or of a resumed one) does; the values computed are the same.
    """
    free = getattr(model.graph.function("train"), "free", None)
    if free is not None:
        free()


def _append(history, key, value):
    history.setdefault(key, []).append(float(value))


def _reset_optimizer(model):
    """Adam's step count and moments to zero, as at the start of the original's ``fit``."""
    model.set_optimizer_state(OrderedDict((k, np.zeros_like(v)) for k, v in model.optimizer_state().items()))


def _epoch_line(epoch, seconds, lr, per_step):
    # The original's log header: "*Epoch=%d\tTime=%.2f\tLR=%.5f" (S2S_DGM.py:1687-1708).
    terms = "  ".join(f"{k}={np.mean(v):.4f}" for k, v in per_step.items())
    return f"*Epoch={epoch}\tTime={seconds:.2f}\tLR={lr:.5f}\t{terms}"


def _progress_bar(progress, length, label):
    if not progress or length <= 0:
        return None
    import click

    def show(item):
        if item is None:
            return ""
        if isinstance(item, str):  # a phase before the first step
            return item
        epoch, epochs, total = item
        return f"epoch {epoch}/{epochs} total={total:.3f}"

    bar = click.progressbar(
        length=length, label=label or "training", file=sys.stderr, show_eta=True, item_show_func=show
    )
    bar.__enter__()
    return bar


__all__ = [
    "SOURCES",
    "TERMS",
    "TrainingDiverged",
    "TrainingError",
    "TrainingInterrupted",
    "batch_index",
    "epoch_batches",
    "epoch_permutations",
    "evaluate",
    "evaluation_sources",
    "fit",
    "learning_rate",
    "new_shuffle_generators",
    "shuffle_seeds",
    "steps_per_epoch",
    "training_sources",
]
