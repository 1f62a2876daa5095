"""Training is bit-identical to the commit recorded in ``tests/data/bit_identical.json``.

A refactor of the graph, the compile mode or the kernels must not move a bit
of a C-mode run: the recording was made with ``python tests/support/bit_identical.py
--record`` at the commit it names, before the change, and this test trains
the same four configurations again (full-size networks, nine steps) in a
fresh interpreter and compares every digest. The recording holds one and
two threads; the suite checks one thread (a count fixed whatever the
machine's cores); ``UNTAPPED_BIT_IDENTICAL_THREADS=1,2 python -m pytest
tests/test_bit_identical.py`` checks both.
"""

import json

import pytest

from support import bit_identical


@pytest.fixture(scope="module")
def recorded():
    return json.loads(bit_identical.RECORD.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("threads", bit_identical.TESTED_THREAD_COUNTS)
def test_training_matches_the_recorded_commit(recorded, threads, mnist_dir):
    expected = recorded["threads"][str(threads)]
    actual = bit_identical.in_subprocess(threads, mnist_dir)
    assert sorted(actual) == sorted(bit_identical.CONFIGS)
    for name in bit_identical.CONFIGS:
        for part in ("totals", "params", "optimizer", "evaluation"):
            assert actual[name][part] == expected[name][part], (
                f"{name}, {threads} thread(s): {part} differ from commit {recorded['commit']}"
            )


def test_each_recording_is_named_for_its_numpy_and_where_needed_its_processor_class():
    """The lock's recording holds on every x86-64 processor with AVX2; those of :data:`PER_PROCESSOR`'s releases
    are one per processor class, and every recording in ``tests/data`` is one that a machine would look up."""
    assert bit_identical.record_path(bit_identical.LOCK_NUMPY, "avx2").name == "bit_identical.json"
    assert bit_identical.record_path(bit_identical.LOCK_NUMPY, "avx512").name == "bit_identical.json"
    assert bit_identical.record_path("2.5.5", "avx2").name == "bit_identical-numpy-2.5.5-avx2.json"
    assert bit_identical.processor_class() in ("avx512", "avx2", "other")
    looked_up = {
        bit_identical.record_path(numpy, processor)
        for numpy in (bit_identical.LOCK_NUMPY, *bit_identical.PER_PROCESSOR)
        for processor in ("avx512", "avx2")
    }
    assert set(bit_identical.TESTS.joinpath("data").glob("bit_identical*.json")) == looked_up
