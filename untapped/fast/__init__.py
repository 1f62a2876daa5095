"""The speed layer: the C mode's kernels and rewrites, beside the paper layer, never inside it.

A training step applies transcendental functions to tens of millions of
elements (the decoder's 10,000 x 500 tanh layer and its 10,000 x 784
Bernoulli outputs, three passes each). PyTensor's C loops call the C
library's scalar ``expf`` / ``logf`` / ``tanhf`` on one thread. Here, one
concept a module:

- :mod:`~untapped.fast.codegen` - the C support code and the row-op base;
- :mod:`~untapped.fast.tanh` - the Cephes tanh, a tanh layer and its gradient;
- :mod:`~untapped.fast.bernoulli` - the decoder's Bernoulli log-likelihood,
  gradient and sample in one pass;
- :mod:`~untapped.fast.rows` - row gathers / scatters and matrix sums on all threads;
- :mod:`~untapped.fast.matmul` - each product in the orientation BLAS runs fastest;
- :mod:`~untapped.fast.noise` - float32 uniforms, a large draw on all cores;
- :mod:`~untapped.fast.distinct` - the reverse pass decoding each distinct (y, z) once;
- :mod:`~untapped.fast.patterns` - the one graph pattern the kernels match;
- :mod:`~untapped.fast.rewrites` - the rewrites the C mode adds to ``fast_run``;
- :mod:`~untapped.fast.precompiled_header` - a precompiled Python.h for faster C compiles;
- :mod:`~untapped.fast.compat` - what differs between the PyTensor versions it runs on;
- :mod:`~untapped.fast.kernels` - :data:`~untapped.fast.kernels.FAST`, the kernels a
  C-mode graph is built with.

It enters a model in two places only: the kernels chosen when the graph is
built (:func:`untapped.backend.kernels`) and the rewrites of the compile
mode (:func:`untapped.backend.compile_mode`).

The row ops run rows on OpenMP threads and columns as SIMD loops, with
glibc's vector ``expf`` / ``logf``. Every result equals PyTensor's own
float32 graph to float32 rounding (a few ulps; ``tests/test_ops.py``), the
size of a float32 reassociation, so values stay within the reference
tolerances. Each op also has a NumPy implementation (``perform``).
"""
