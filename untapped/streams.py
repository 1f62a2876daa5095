"""The random streams of a run of seed ``seed``: one table, each stream with its use.

A run's seed is used three ways, and the three never share a stream:

- **the split**: ``np.random.default_rng(seed)`` draws the unlabeled rows and
  the unfeatured z (:func:`untapped.data.make_split`; the original's draws
  were unseeded);
- **the weights**: ``np.random.RandomState(seed)``, the Lasagne initialisers'
  generator (:class:`untapped.paper.networks.Networks`), as the original, so
  the original's seed gives its initial weights bit for bit;
- **the streams** of :data:`STREAMS`: each is a child of
  ``np.random.SeedSequence(seed)``, by its index in the table, and feeds a
  ``np.random.default_rng``. Children of one ``SeedSequence`` are
  independent streams, and neither of the two uses above draws from one.

The indices are the run's record: a checkpoint saves its generators by name,
and a change of index changes every seeded run. A new stream takes the next
index. (A reference bundle's three generators, :func:`untapped.reference.inputs.generators`,
are children 0-2 of the bundle's seed; a bundle trains no run, so they are
not run streams.)
"""

import dataclasses
from collections import OrderedDict

import numpy as np


@dataclasses.dataclass(frozen=True)
class Stream:
    """A named random stream: child ``index`` of ``SeedSequence(seed)``, and what it draws."""

    name: str
    index: int
    use: str


#: The run's streams, by index: name -> :class:`Stream`.
STREAMS = OrderedDict(
    (s.name, s)
    for s in (
        Stream(
            "train",
            0,
            "the training step's noise: one child per noise array of untapped.paper.samplers.NOISE, in its order "
            "(generators train/<source>/<noise>)",
        ),
        Stream("evaluate", 1, "the evaluation's noise, as 'train' (generators evaluate/<source>/<noise>)"),
        Stream("shuffle/train", 2, "the training epochs' permutations of the sources (untapped.schedule)"),
        Stream("shuffle/evaluate", 3, "the evaluations' permutations of the evaluation sources (untapped.schedule)"),
        Stream(
            "train/unfeatured/prior_z",
            4,
            "a fresh z ~ p(z) for every unfeatured row of every training batch (SSDGM(unfeatured_z='prior'))",
        ),
    )
)


def streams(seed):
    """Each stream of :data:`STREAMS` for ``seed``: name -> a fresh ``np.random.SeedSequence``.

    Fresh on every call: spawning children from one (as the noise streams do)
    leaves the next call's sequences as they were.
    """
    return OrderedDict((name, np.random.SeedSequence(seed, spawn_key=(s.index,))) for name, s in STREAMS.items())


def generator(seed, name):
    """A fresh ``np.random.default_rng`` on stream ``name`` of :data:`STREAMS`."""
    return np.random.default_rng(streams(seed)[name])
