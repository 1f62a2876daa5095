"""The original's epoch schedule (``S2S_DGM.py:1454-1478, 1513-1656``): the sources, their shuffles and
batches, the learning rate, the evaluation.

Per epoch (1-based, as the original's):

1. Shuffle every source: one permutation for the labeled (x, y) pairs, one
   for the unlabeled images, one for the unfeatured (y, z) pairs, so rows
   that belong together stay together. The permutations are drawn, in that
   order (:data:`SOURCES`), from a NumPy ``Generator`` (``shuffle/train``,
   :func:`new_shuffle_generators`) seeded from the model's seed and saved
   in every checkpoint. The original shuffled its arrays in place epoch
   after epoch; a fresh permutation of the original order each epoch has
   the same distribution.
2. Take ``max_s ceil(N_s / batch_size)`` steps (:func:`steps_per_epoch`; 4
   for MNIST at 10,000). Step ``i`` of a source of ``N`` rows uses the rows
   ``perm[(i * bs + arange(bs)) % N]`` (:func:`batch_index`), which is
   exactly the original's ``concat(sh[start:end], tile(sh, q), sh[0:r])``
   with ``start = i*bs % N``: every batch has ``bs`` rows, wrapping around
   and repeating whole copies when ``bs > N`` (the 10 unfeatured rows tiled
   to 10,000).
3. The learning rate of epoch ``e`` is ``learning_rate * factor ** max(0, e -
   anneal_lr_epoch)`` (:func:`learning_rate`), computed by the original's
   repeated multiplication: x0.9995 after every epoch from epoch 500 on.

The evaluation (:func:`evaluate`) cuts the evaluation sources
(:func:`evaluation_sources`) into batches the same way, shuffled by their
own generator (``shuffle/evaluate``).
"""

import copy
from collections import OrderedDict

import numpy as np

from untapped.streams import streams

#: The order in which the sources are shuffled and batched.
SOURCES = ("labeled", "unlabeled", "unfeatured")
#: The shuffles' generators: the training epochs' and the evaluations' (streams of :mod:`untapped.streams`).
SHUFFLES = ("shuffle/train", "shuffle/evaluate")


def steps_per_epoch(sizes, batch_size):
    """``max_s ceil(N_s / bs)`` over the sources (the original's ``S2S_DGM.py:1519-1522``)."""
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


def learning_rate(epoch, base, factor, anneal_epoch):
    """The learning rate used in (1-based) ``epoch``: ``base * factor ** max(0, epoch - anneal_epoch)``.

    ``base``, ``factor`` and ``anneal_epoch`` are the model's ``learning_rate``,
    ``anneal_lr_factor`` and ``anneal_lr_epoch`` (the original's 0.01, 0.9995, 500).

    Computed as the original does (``S2S_DGM.py:1609-1611``): after each epoch ``e >=
    anneal_epoch``, ``lr *= factor``, in Python floats.
    """
    lr = float(base)
    for _ in range(int(anneal_epoch), int(epoch)):
        lr *= factor
    return lr


def shuffle_seeds(seed):
    """The seed sequences of the ``shuffle/train`` and ``shuffle/evaluate`` generators (:mod:`untapped.streams`)."""
    seeds = streams(seed)
    return OrderedDict((name, seeds[name]) for name in SHUFFLES)


def new_shuffle_generators(seed):
    """The ``shuffle/train`` and ``shuffle/evaluate`` generators of a run of ``seed``, fresh (:func:`shuffle_seeds`)."""
    return OrderedDict((name, np.random.default_rng(s)) for name, s in shuffle_seeds(seed).items())


def epoch_permutations(rng, sizes):
    """One permutation per source, drawn in :data:`SOURCES` order."""
    return OrderedDict((source, rng.permutation(int(sizes[source]))) for source in SOURCES)


def epoch_batches(rng, sizes, batch_size):
    """The index vectors of one epoch: a list of ``{source: indices}``, one per step."""
    perms = epoch_permutations(rng, sizes)
    n = steps_per_epoch(sizes, batch_size)
    return [OrderedDict((s, batch_index(perms[s], i, batch_size)) for s in SOURCES) for i in range(n)]


# ---------------------------------------------------------------- what steps and evaluations read


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
    """The evaluation arrays (``DEMO_mnist.py:33-42``: X_valid, y_valid, X__valid, _y_valid, z2_valid)."""
    return OrderedDict(
        labeled_x=split.eval_x,
        labeled_y=split.eval_y,
        unlabeled_x=split.eval_unlabeled_x,
        unfeatured_y=split.eval_unfeatured_y,
        unfeatured_z=split.eval_unfeatured_z,
    )


def source_sizes(arrays):
    """Rows per source of the arrays of :func:`training_sources` or :func:`evaluation_sources`."""
    return OrderedDict(
        labeled=len(arrays["labeled_x"]), unlabeled=len(arrays["unlabeled_x"]), unfeatured=len(arrays["unfeatured_y"])
    )


def evaluate(model, split, batch_size, rng):
    """All five terms and the total on the evaluation sources: mean of per-batch means."""
    arrays = evaluation_sources(split)
    sizes = source_sizes(arrays)
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


def evaluate_aside(model, split, batch_size, rng):
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


def without_evaluation_aside(history, epoch, eval_every):
    """``history`` without its evaluation at ``epoch`` if that one was made aside (:func:`evaluate_aside`).

    ``eval_every`` is the schedule of the run that wrote the history; a run
    that goes on past ``epoch`` keeps only the schedule's evaluations, as an
    uninterrupted run has them.
    """
    evaluated = history.get("eval/epoch") or []
    if epoch % eval_every == 0 or not evaluated or evaluated[-1] != epoch:
        return history
    return OrderedDict((k, v[:-1] if k.startswith("eval/") else v) for k, v in history.items())
