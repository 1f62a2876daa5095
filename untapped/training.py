"""The epoch loop of the original ``SSDGM.fit`` (``original_code.md`` §5).

Per epoch (1-based, as the original's):

1. Shuffle every source (§5.2): one permutation for the labeled (x, y) pairs,
   one for the unlabeled images, one for the unfeatured (y, z) pairs, so
   rows that belong together stay together. The permutations are drawn,
   in that order, from a NumPy ``Generator`` (``shuffle/train``) seeded from
   the model's seed and saved in every checkpoint. The original shuffled its
   arrays in place epoch after epoch; a fresh permutation of the original
   order each epoch has the same distribution.
2. Take ``max_s ceil(N_s / batch_size)`` steps (4 for MNIST at 10,000). Step
   ``i`` of a source of ``N`` rows uses the rows ``perm[(i * bs + arange(bs))
   % N]`` (:func:`batch_index`), which is exactly the original's
   ``concat(sh[start:end], tile(sh, q), sh[0:r])`` with ``start = i*bs % N``:
   every batch has ``bs`` rows, wrapping around and repeating whole copies
   when ``bs > N`` (the 10 unfeatured rows tiled to 10,000). Each step is one
   call of the model's compiled training function on these index vectors.
3. The learning rate of epoch ``e`` is ``learning_rate * factor ** max(0, e -
   anneal_lr_epoch)`` (:func:`learning_rate`), computed by the original's
   repeated multiplication: x0.9995 after every epoch from epoch 500 on.
4. Record the mean over the epoch's steps of every training term
   (``train/<term>``), as the original's per-epoch record.
5. Every ``eval_every`` epochs, and after the last, evaluate all five terms on
   the evaluation sources (§5.3: digits 5-9 with their labels, the same
   unlabeled images, the same unfeatured y with the second z draw), shuffled
   by a separate generator (``shuffle/evaluate``) and cut into batches the
   same way; the record is the unweighted mean of the per-batch means
   (``eval/<term>``). Evaluation draws its noise from its own generators, so
   it never changes the training trajectory. The evaluation after the last
   epoch, when that epoch is off the schedule, draws from copies of the
   evaluation generators: the checkpoint keeps the schedule's streams, and
   a run resumed from it drops that evaluation from the history, so its
   history and checkpoint equal those of an uninterrupted run.
6. Check that every term and every parameter is finite, then write the
   checkpoint (every ``checkpoint_every`` epochs and after the last; a run
   of no epochs writes the state it starts from).

A non-finite term or parameter raises :class:`TrainingDiverged` right away
(the original's NaN check, without its ``IPython.embed()``); the last
checkpoint written is the last good state. Ctrl-C writes the state at the end
of the last completed epoch (so resuming is exact) and raises
:class:`TrainingInterrupted`.
"""

import copy
import math
import sys
import time
from collections import OrderedDict

import numpy as np

from untapped import checkpoint as ckpt_io
from untapped.files import same_file
from untapped.objectives import TERMS

#: The order in which the sources are shuffled and batched.
SOURCES = ("labeled", "unlabeled", "unfeatured")


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


# ---------------------------------------------------------------- schedule


def steps_per_epoch(sizes, batch_size):
    """``max_s ceil(N_s / bs)`` over the sources (``original_code.md`` §5.2)."""
    sizes = list(sizes.values()) if isinstance(sizes, dict) else list(sizes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not sizes or min(sizes) < 1:
        raise ValueError(f"every source needs at least one row, got sizes {sizes}")
    return max(-(-int(n) // int(batch_size)) for n in sizes)


def batch_index(perm, step, batch_size):
    """Rows of batch ``step`` of a source shuffled by ``perm``: ``perm[(step*bs + arange(bs)) % N]``.

    Equal to the original's wrap-around slice of the shuffled array,
    ``concat(sh[start:end], tile(sh, q), sh[0:r])`` with ``start = (step*bs) % N``,
    ``end = min(start + bs, N)``, ``(q, r) = divmod(bs - (end - start), N)``.
    """
    perm = np.asarray(perm)
    return perm[(step * batch_size + np.arange(batch_size, dtype=np.int64)) % len(perm)]


def learning_rate(epoch, base=0.01, factor=0.9995, anneal_epoch=500):
    """The learning rate used in (1-based) ``epoch``: ``base * factor ** max(0, epoch - anneal_epoch)``.

    Computed as the original does (S2S:1609-1611): after each epoch ``e >=
    anneal_epoch``, ``lr *= factor``, in Python floats.
    """
    lr = float(base)
    for _ in range(int(anneal_epoch), int(epoch)):
        lr *= factor
    return lr


def shuffle_seeds(seed):
    """The seed sequences of the ``shuffle/train`` and ``shuffle/evaluate`` generators.

    The model derives its noise generators from ``SeedSequence(seed).spawn(2)``;
    the shuffles take the next two children, so all streams are independent.
    """
    children = np.random.SeedSequence(seed).spawn(4)
    return OrderedDict([("shuffle/train", children[2]), ("shuffle/evaluate", children[3])])


def new_shuffle_generators(seed):
    return OrderedDict((name, np.random.default_rng(s)) for name, s in shuffle_seeds(seed).items())


def epoch_permutations(rng, sizes):
    """One permutation per source, drawn in :data:`SOURCES` order."""
    return OrderedDict((source, rng.permutation(int(sizes[source]))) for source in SOURCES)


def epoch_batches(rng, sizes, batch_size):
    """The index vectors of one epoch: a list of ``{source: indices}``, one per step."""
    perms = epoch_permutations(rng, sizes)
    n = steps_per_epoch(sizes, batch_size)
    return [OrderedDict((s, batch_index(perms[s], i, batch_size)) for s in SOURCES) for i in range(n)]


# ---------------------------------------------------------------- sources


def training_sources(split):
    """The training arrays of a split, as ``model.set_training_data`` takes them."""
    return OrderedDict(
        labeled_x=split.labeled_x,
        labeled_y=split.labeled_y,
        unlabeled_x=split.unlabeled_x,
        unfeatured_y=split.unfeatured_y,
        unfeatured_z=split.unfeatured_z,
    )


def evaluation_sources(split):
    """The evaluation arrays (``original_code.md`` §1.3: X_valid, y_valid, X__valid, _y_valid, z2_valid)."""
    return OrderedDict(
        labeled_x=split.eval_x,
        labeled_y=split.eval_y,
        unlabeled_x=split.eval_unlabeled_x,
        unfeatured_y=split.eval_unfeatured_y,
        unfeatured_z=split.eval_unfeatured_z,
    )


def _sizes(arrays):
    return OrderedDict(
        labeled=len(arrays["labeled_x"]), unlabeled=len(arrays["unlabeled_x"]), unfeatured=len(arrays["unfeatured_y"])
    )


def evaluate(model, split, batch_size, rng):
    """All five terms and the total on the evaluation sources: mean of per-batch means."""
    arrays = evaluation_sources(split)
    sizes = _sizes(arrays)
    totals = OrderedDict()
    batches = epoch_batches(rng, sizes, batch_size)
    for index in batches:
        values = model.evaluate(
            labeled_x=arrays["labeled_x"][index["labeled"]],
            labeled_y=arrays["labeled_y"][index["labeled"]],
            unlabeled_x=arrays["unlabeled_x"][index["unlabeled"]],
            unfeatured_y=arrays["unfeatured_y"][index["unfeatured"]],
            unfeatured_z=arrays["unfeatured_z"][index["unfeatured"]],
        )
        for k, v in values.items():
            totals.setdefault(k, []).append(v)
    return OrderedDict((k, float(np.mean(v))) for k, v in totals.items())


# ---------------------------------------------------------------- the loop


def fit(
    model,
    split,
    *,
    epochs=None,
    batch_size=None,
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
    epochs, batch_size, eval_every : default to the model's hyperparameters.
        ``epochs`` is the total, counting epochs done before a resume.
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
    epochs = int(model.epochs if epochs is None else epochs)
    batch_size = int(model.batch_size if batch_size is None else batch_size)
    eval_every = int(model.eval_every if eval_every is None else eval_every)
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    log = log or (lambda line: None)
    run_config = dict(config or {})
    run_config.update(epochs=epochs, batch_size=batch_size, eval_every=eval_every)

    train_arrays = training_sources(split)
    sizes = _sizes(train_arrays)
    n_steps = steps_per_epoch(sizes, batch_size)
    if evaluation:
        steps_per_epoch(_sizes(evaluation_sources(split)), batch_size)  # fails early on an empty source

    shuffles = new_shuffle_generators(model.seed)
    if resume is not None:
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
        if start > epochs:
            raise ValueError(f"the checkpoint is at epoch {start}, past the requested total of {epochs} epochs")
        if epochs > start:
            history = _without_evaluation_aside(history, start, int((resume.config or {}).get("eval_every", eval_every)))
    else:
        _reset_optimizer(model)
        history = OrderedDict()
        start = 0

    model.set_training_data(**train_arrays)

    def snapshot(epoch):
        return ckpt_io.Checkpoint.from_model(
            model,
            epoch=epoch,
            rng=OrderedDict((k, g.bit_generator.state) for k, g in shuffles.items()),
            split=split,
            history=history,
            config=run_config,
        )

    last_good = resume if resume is not None else snapshot(0)
    last_good_saved = resume is not None and checkpoint_path is not None and resume.path is not None and \
        same_file(resume.path, checkpoint_path)
    model.history_ = history
    model.epoch_ = start
    model.checkpoint_ = resume
    model.compile_seconds_ = OrderedDict()
    if epochs == start and checkpoint_path is not None and not last_good_saved:
        # Every run writes its checkpoint, one of no epochs too (the initial state).
        last_good.save(checkpoint_path)
        last_good_saved = True

    if epochs > start:
        # Compile before the clock starts, so epoch times are training times
        # (``design.md`` §5: compile times reported apart).
        for name in ("train", "evaluate") if evaluation else ("train",):
            began = time.perf_counter()
            model.graph.function(name)
            model.compile_seconds_[name] = time.perf_counter() - began
        log("compiled in " + ", ".join(f"{k} {v:.1f} s" for k, v in model.compile_seconds_.items()))

    bar = _progress_bar(progress, (epochs - start) * n_steps, label)
    epoch = start
    try:
        for epoch in range(start + 1, epochs + 1):
            lr = learning_rate(epoch, model.learning_rate, model.anneal_lr_factor, model.anneal_lr_epoch)
            began = time.perf_counter()
            per_step = OrderedDict()
            for step, index in enumerate(epoch_batches(shuffles["shuffle/train"], sizes, batch_size), 1):
                values = model.train_step(index["labeled"], index["unlabeled"], index["unfeatured"], lr)
                bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise _diverged(f"epoch {epoch}, step {step}: non-finite training term(s) {', '.join(bad)}",
                                    epoch, last_good, last_good_saved, checkpoint_path)
                for k, v in values.items():
                    per_step.setdefault(k, []).append(v)
                if bar is not None:
                    bar.update(1, current_item=(epoch, epochs, values["total"]))
            seconds = time.perf_counter() - began
            _append(history, "epoch", epoch)
            _append(history, "learning_rate", lr)
            _append(history, "seconds", seconds)
            for k, v in per_step.items():
                _append(history, f"train/{k}", float(np.mean(v)))
            bad = [name for name, value in model.param_values_by_name().items() if not np.isfinite(value).all()]
            if bad:
                raise _diverged(f"epoch {epoch}: non-finite parameter(s) {', '.join(bad[:3])}",
                                epoch, last_good, last_good_saved, checkpoint_path)
            log(_epoch_line(epoch, seconds, lr, per_step))
            on_schedule = epoch % eval_every == 0
            if evaluation and (on_schedule or epoch == epochs):
                _free_step_buffers(model)
                if on_schedule:
                    values = evaluate(model, split, batch_size, shuffles["shuffle/evaluate"])
                else:
                    values = _evaluate_aside(model, split, batch_size, shuffles["shuffle/evaluate"])
                _append(history, "eval/epoch", epoch)
                for k, v in values.items():
                    _append(history, f"eval/{k}", v)
                log("  eval  " + "  ".join(f"{k}={v:.4f}" for k, v in values.items()))
                bad = [f"{k}={v}" for k, v in values.items() if not math.isfinite(v)]
                if bad:
                    raise _diverged(f"epoch {epoch}: non-finite evaluation term(s) {', '.join(bad)}",
                                    epoch, last_good, last_good_saved, checkpoint_path)
            last_good = snapshot(epoch)
            last_good_saved = False
            model.epoch_ = epoch
            if checkpoint_path is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
                last_good.save(checkpoint_path)
                last_good_saved = True
            model.checkpoint_ = last_good
    except KeyboardInterrupt:
        saved = None
        if checkpoint_path is not None:
            if not last_good_saved:
                last_good.save(checkpoint_path)
            saved = checkpoint_path
        done = last_good.epoch
        where = f"; the state after epoch {done} is in {saved}" if saved else ""
        raise TrainingInterrupted(f"interrupted during epoch {epoch}{where}", done, saved) from None
    finally:
        if bar is not None:
            bar.render_finish()
    # The model holds the state of the last completed epoch; undo nothing.
    model.checkpoint_ = last_good
    return model


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


def _evaluate_aside(model, split, batch_size, rng):
    """:func:`evaluate` with copies of the evaluation generators (noise and shuffle); the originals stay as they were.

    For the evaluation after the last epoch when that epoch is not on the
    ``eval_every`` schedule: a run resumed from this run's checkpoint must
    find the schedule's streams where an uninterrupted run has them, and an
    uninterrupted run never made this evaluation.
    """
    states = copy.deepcopy(model.rng_states())
    values = evaluate(model, split, batch_size, copy.deepcopy(rng))
    model.set_rng_states(states)
    return values


def _without_evaluation_aside(history, epoch, eval_every):
    """``history`` without its evaluation at ``epoch`` if that one was made aside (:func:`_evaluate_aside`).

    ``eval_every`` is the schedule of the run that wrote the history; a run
    that goes on past ``epoch`` keeps only the schedule's evaluations, as an
    uninterrupted run has them.
    """
    evaluated = history.get("eval/epoch") or []
    if epoch % eval_every == 0 or not evaluated or evaluated[-1] != epoch:
        return history
    return OrderedDict((k, v[:-1] if k.startswith("eval/") else v) for k, v in history.items())


def _append(history, key, value):
    history.setdefault(key, []).append(float(value))


def _reset_optimizer(model):
    """Adam's step count and moments to zero, as at the start of the original's ``fit``."""
    model.set_optimizer_state(OrderedDict((k, np.zeros_like(v)) for k, v in model.optimizer_state().items()))


def _diverged(message, epoch, last_good, last_good_saved, checkpoint_path):
    saved = None
    if checkpoint_path is not None:
        if not last_good_saved and last_good.epoch > 0:
            last_good.save(checkpoint_path)
        if last_good_saved or last_good.epoch > 0:
            saved = checkpoint_path
    if saved is not None:
        message += f"; training stopped, the last good state (epoch {last_good.epoch}) is in {saved}"
    else:
        message += "; training stopped"
    return TrainingDiverged(message, last_good.epoch, saved)


def _epoch_line(epoch, seconds, lr, per_step):
    # The original's log header: "*Epoch=%d\tTime=%.2f\tLR=%.5f" (S2S:1687-1708).
    terms = "  ".join(f"{k}={np.mean(v):.4f}" for k, v in per_step.items())
    return f"*Epoch={epoch}\tTime={seconds:.2f}\tLR={lr:.5f}\t{terms}"


def _progress_bar(progress, length, label):
    if not progress or length <= 0:
        return None
    import click

    def show(item):
        if item is None:
            return ""
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
    "steps_per_epoch",
    "training_sources",
]
