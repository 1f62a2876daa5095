"""Float32 uniform draws, large ones on all cores: the same numbers as NumPy's single-threaded stream.

The paper layer draws U[0, 1) in stock PyTensor ops
(:func:`untapped.paper.samplers.uniform`: 24-bit integers times 2**-24, which
NumPy's ``Generator`` turns into exactly the numbers and generator state of
``Generator.random(dtype=float32)``). :data:`uniform_float32` draws the same
numbers directly, splitting a large draw across threads.
"""

import concurrent.futures
import os

import numpy as np
from pytensor.tensor.random.op import RandomVariable


class StandardUniformFloat32RV(RandomVariable):
    """U[0, 1) drawn directly in float32: ``Generator.random(size, dtype=float32)``.

    PyTensor's ``uniform`` draws float64 and casts, which costs twice the
    work and can round a draw within 2**-25 of 1 up to 1.0. NumPy's float32
    draws are multiples of 2**-24 in [0, 1 - 2**-24] (as Theano's MRG float32
    uniform was), so a draw is never 1. The stream is a function of the
    generator's state alone, so seeded runs stay reproducible and resumable.
    """

    name = "standard_uniform_float32"
    signature = "->()"
    dtype = "float32"
    _print_name = ("U01f32", "\\operatorname{U01f32}")

    def rng_fn(self, rng, size):
        return random_float32(rng, size)


standard_uniform_float32 = StandardUniformFloat32RV()

#: Draws of at least this many numbers are split across threads, at most this many.
PARALLEL_DRAW_MIN = 1 << 20
MAX_DRAW_THREADS = 8


def random_float32(rng, size):
    """``rng.random(size, dtype=float32)``, the same numbers and final generator state, drawn on all cores.

    A 10,000 x 784 draw is 3.9 million PCG64 steps (two float32 numbers a
    step). PCG64 can jump ahead (``advance``), so each
    thread takes a copy of the generator advanced to the start of its own
    slice of the stream and fills that slice; NumPy's fill releases the GIL.
    Draws too small to gain, of an odd length, or starting from a half-used
    step (a buffered 32-bit half), and other bit generators, are drawn on
    one thread, as are all draws on a single core.
    """
    n = int(np.prod(size, dtype=np.int64)) if size is not None else 1
    bitgen = rng.bit_generator
    threads = min(os.cpu_count() or 1, MAX_DRAW_THREADS)
    if threads < 2 or n < PARALLEL_DRAW_MIN or n % 2 or type(bitgen) not in (np.random.PCG64, np.random.PCG64DXSM):
        return rng.random(size=size, dtype=np.float32)
    state = bitgen.state
    if state["has_uint32"]:
        return rng.random(size=size, dtype=np.float32)
    out = np.empty(n, np.float32)
    bounds = [2 * (n // 2 * i // threads) for i in range(threads + 1)]  # even: whole PCG64 steps
    slices = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        generator = np.random.Generator(type(bitgen)())
        generator.bit_generator.state = state
        generator.bit_generator.advance(start // 2)
        slices.append((generator, out[start:stop]))
    pending = [_draw_pool().submit(g.random, dtype=np.float32, out=o) for g, o in slices[1:]]
    slices[0][0].random(dtype=np.float32, out=slices[0][1])
    for future in pending:
        future.result()
    bitgen.state = slices[-1][0].bit_generator.state
    return out.reshape(size)


#: This process's pool of drawing threads, by process id.
_POOLS = {}


def _draw_pool():
    """The drawing threads of this process (the calling thread fills the first slice itself).

    A forked child inherits its parent's pool but not its threads, so each
    process id gets a pool of its own.
    """
    pid = os.getpid()
    if pid not in _POOLS:
        _POOLS.clear()
        _POOLS[pid] = concurrent.futures.ThreadPoolExecutor(
            max_workers=MAX_DRAW_THREADS - 1, thread_name_prefix="untapped-draw"
        )
    return _POOLS[pid]


def uniform_float32(rng, size):
    """``(next_rng, draw)``: a float32 U[0, 1) array of shape ``size`` from the shared generator ``rng``."""
    return standard_uniform_float32(size=size, rng=rng, return_next_rng=True)


