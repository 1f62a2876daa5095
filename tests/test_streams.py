"""The table of a run's random streams: distinct streams, each the SeedSequence child a run has always drawn from."""

import numpy as np
import pytest

from untapped import schedule
from untapped.model import SSDGM
from untapped.paper import samplers
from untapped.streams import STREAMS, generator, streams

SEEDS = (0, 1, 1234, 2**32 - 1)


def spawned(seed):
    """The children the run's streams were first written as, spawned from ``SeedSequence(seed)`` directly."""
    return {
        "train": np.random.SeedSequence(seed).spawn(2)[0],
        "evaluate": np.random.SeedSequence(seed).spawn(2)[1],
        "shuffle/train": np.random.SeedSequence(seed).spawn(4)[2],
        "shuffle/evaluate": np.random.SeedSequence(seed).spawn(4)[3],
        "train/unfeatured/prior_z": np.random.SeedSequence(seed).spawn(5)[4],
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_every_stream_is_the_seed_sequence_child_it_replaces(seed):
    table = streams(seed)
    expected = spawned(seed)
    assert list(table) == list(STREAMS) and set(table) == set(expected)
    for name, sequence in table.items():
        assert sequence.generate_state(8).tolist() == expected[name].generate_state(8).tolist(), name
        ours, theirs = generator(seed, name), np.random.default_rng(expected[name])
        assert ours.bit_generator.state == theirs.bit_generator.state, name
        assert np.array_equal(ours.random(5), theirs.random(5)), name


@pytest.mark.parametrize("seed", SEEDS)
def test_the_streams_are_distinct_and_none_is_the_split_or_the_weights(seed):
    words = {name: tuple(s.generate_state(4).tolist()) for name, s in streams(seed).items()}
    assert len(set(words.values())) == len(STREAMS)
    assert sorted(s.index for s in STREAMS.values()) == list(range(len(STREAMS)))
    first = {name: generator(seed, name).integers(0, 2**63, size=4).tolist() for name in STREAMS}
    split = np.random.default_rng(seed).integers(0, 2**63, size=4).tolist()
    weights = np.random.RandomState(seed).randint(0, 2**31, size=4).tolist()
    drawn = list(first.values())
    assert split not in drawn and weights not in drawn


def test_a_call_is_fresh_after_its_sequences_spawn():
    first = streams(1234)
    first["train"].spawn(3)
    again = streams(1234)
    child = again["train"].spawn(1)[0]
    assert child.generate_state(4).tolist() == spawned(1234)["train"].spawn(1)[0].generate_state(4).tolist()


def test_the_shuffles_draw_from_their_streams():
    for name, rng in schedule.new_shuffle_generators(77).items():
        assert rng.bit_generator.state == np.random.default_rng(spawned(77)[name]).bit_generator.state


def test_the_model_draws_its_noise_from_the_streams():
    model = SSDGM(classifier_hidden=(3,), encoder_hidden=(3,), decoder_hidden=(3,), seed=5, unfeatured_z="prior")
    states = model.rng_states()
    for prefix in ("train", "evaluate"):
        children = spawned(5)[prefix].spawn(len(samplers.NOISE))
        for spec, child in zip(samplers.NOISE, children):
            expected = np.random.default_rng(child).bit_generator.state
            assert states[f"{prefix}/{samplers.noise_key(spec)}"] == expected
    prior = np.random.default_rng(spawned(5)["train/unfeatured/prior_z"]).bit_generator.state
    assert states["train/unfeatured/prior_z"] == prior
