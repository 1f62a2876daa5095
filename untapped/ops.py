"""Float32 C ops for the training step's hot spots, where PyTensor's defaults are slow.

A training step applies transcendental functions to tens of millions of
elements (the decoder's 10,000 x 500 tanh layer and its 10,000 x 784
Bernoulli outputs, three passes each). PyTensor's C loops call the C
library's scalar ``expf`` / ``logf`` / ``tanhf`` on one thread. Here:

- :data:`tanh` is the Cephes library's ``tanhf`` (an odd minimax polynomial
  ``x + x^3 P(x^2)`` for ``|x| < 0.625``, else ``sign(x) (1 - 2 / (exp(2|x|) + 1))``),
  a scalar op PyTensor fuses like its own ``tanh``; :data:`bias_tanh` is a
  dense layer's ``tanh(a + b)`` with it, in one vectorised pass, and
  :data:`tanh_grad` is its backward ``g (1 - t^2)`` (and the bias gradient,
  its column sums) on all threads.
- :class:`BernoulliLogLikRows` (and its gradient) is the decoder's output
  bias, sigmoid, clip, Bernoulli log terms and row sum in one pass, writing
  nothing of size (rows, 784); :class:`BernoulliLogLikRowsAndGrad` is both
  in one pass; :class:`BernoulliSampleLogits` is the sample
  ``1[u < sigmoid(a + b)]``.
- :class:`MatrixSum` is a float32 matrix's row or column sum (the bias
  gradients, the per-row densities), float64-accumulated on all threads.
- :data:`uniform_float32` draws U[0, 1) directly in float32, a large draw
  on all cores (:func:`random_float32`: NumPy's stream, split by jumping ahead).
- :data:`matmul` runs each product in the orientation BLAS is fastest at.

The row ops run rows on OpenMP threads and columns as SIMD loops, with
glibc's vector ``expf`` / ``logf``. Every result equals PyTensor's own
float32 graph to float32 rounding (a few ulps; ``tests/test_ops.py``), the
size of a float32 reassociation, so values stay within the reference
tolerances. Each op also has a NumPy implementation (the Numba mode uses it).
"""

import concurrent.futures
import ctypes.util
import functools
import os

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.gradient import DisconnectedType
from pytensor.link.c.op import COp
from pytensor.scalar.basic import UnaryScalarOp, float_types, upgrade_to_float
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.random.op import RandomVariable


_TANH_SUPPORT = r"""
#include <math.h>
/* Cephes tanhf: an odd minimax polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1) above. */
static inline float untapped_tanhf(float x) {
    const float a = fabsf(x);
    const float s = x * x;
    const float p = ((((-5.70498872745E-3f * s + 2.06390887954E-2f) * s
                       - 5.37397155531E-2f) * s + 1.33314422036E-1f) * s
                     - 3.33332819422E-1f) * s * a + a;
    const float e = expf(2.0f * a);
    return copysignf((a < 0.625f) ? p : 1.0f - 2.0f / (e + 1.0f), x);
}
"""


class FastTanh(UnaryScalarOp):
    """``tanh`` with vectorisable float32 C code (Cephes ``tanhf``); see the module docstring."""

    preserves_zero = True
    monotonic_increasing = True
    # Backends without our C code (Numba) compute NumPy's tanh instead.
    nfunc_spec = ("tanh", 1, 1)

    def impl(self, x):
        return np.tanh(x)

    def pullback(self, inputs, outputs, gout):
        (x,) = inputs
        (gz,) = gout
        if x.type not in float_types:
            return [x.zeros_like()]
        return (gz * (1 - ps.sqr(scalar_tanh(x))),)

    def c_support_code(self, **kwargs):
        return _TANH_SUPPORT

    def c_code(self, node, name, inputs, outputs, sub):
        (x,) = inputs
        (z,) = outputs
        if node.outputs[0].type.dtype != "float32":
            cast = node.outputs[0].type.dtype_specs()[1]
            return f"{z} = tanh(({cast}){x});"
        return f"{z} = untapped_tanhf({x});"

    def c_code_cache_version(self):
        return (5,)


scalar_tanh = FastTanh(upgrade_to_float, name="fast_tanh")
#: Elementwise ``tanh`` for tensors (a drop-in for ``pytensor.tensor.tanh``).
tanh = Elemwise(scalar_tanh, name="fast_tanh")


# --------------------------------------------------------------------------
# Float32 uniform draws


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

    A 10,000 x 784 draw takes ~25 ms on one thread (PCG64 steps at ~3.5 ns;
    two float32 numbers a step). PCG64 can jump ahead (``advance``), so each
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


@functools.cache
def _draw_pool():
    # The calling thread fills the first slice itself.
    return concurrent.futures.ThreadPoolExecutor(max_workers=MAX_DRAW_THREADS - 1, thread_name_prefix="untapped-draw")


# A forked child inherits the pool but not its threads: it makes its own.
os.register_at_fork(after_in_child=_draw_pool.cache_clear)


def uniform_float32(rng, size):
    """``(next_rng, draw)``: a float32 U[0, 1) array of shape ``size`` from the shared generator ``rng``."""
    return standard_uniform_float32(size=size, rng=rng, return_next_rng=True)


# --------------------------------------------------------------------------
# Row-parallel, vectorised float32 ops for the (rows, units) hot spots
#
# Each runs its rows on OpenMP threads and its columns as one SIMD loop.
# Where glibc's vector math library (libmvec) exists, expf / logf are
# declared as having vector versions (as glibc's own math.h does under
# -ffast-math), so GCC calls libmvec in those loops. Not -ffast-math
# itself: a module built with it sets flush-to-zero for the whole process
# when loaded. The vector functions differ from the scalar ones by float32
# rounding only (tests/test_ops.py).

_ROW_SUPPORT = r"""
#include <math.h>
#if defined(UNTAPPED_LIBMVEC) && !defined(__FAST_MATH__)
__attribute__((__simd__("notinbranch"))) extern float expf(float);
__attribute__((__simd__("notinbranch"))) extern float logf(float);
#endif
/* sigmoid(a) = 1 / (1 + exp(-a)), as PyTensor computes it. */
static inline float untapped_sigmoidf(float a) {
    return 1.0f / (1.0f + expf(-a));
}
/* The clip of parmesan_compat.distributions.log_bernoulli: c = clip(p, lo, hi). */
static inline float untapped_clipf(float p, float lo, float hi) {
    return p < lo ? lo : (p > hi ? hi : p);
}
/* The log terms of log_bernoulli for one element, p = sigmoid(a). */
static inline float untapped_bern_ll(float x, float a, float lo, float hi) {
    const float c = untapped_clipf(untapped_sigmoidf(a), lo, hi);
    return x * logf(c) + (1.0f - x) * logf(1.0f - c);
}
/* d/da of the same, times g: the clip passes the gradient where lo <= p <= hi. */
static inline float untapped_bern_ll_grad(float x, float a, float g, float lo, float hi) {
    const float p = untapped_sigmoidf(a), c = untapped_clipf(p, lo, hi);
    const float inside = (p >= lo && p <= hi) ? 1.0f : 0.0f;
    return g * inside * (x / c - (1.0f - x) / (1.0f - c)) * (p * (1.0f - p));
}
/* The same two for x in {0, 1}, with one log (one division) instead of two:
   for such x, x log c + (1 - x) log(1 - c) is exactly log c or log(1 - c),
   and x / c - (1 - x) / (1 - c) exactly 1 / c or -1 / (1 - c). */
static inline float untapped_bern_ll_binary(float x, float a, float lo, float hi) {
    const float c = untapped_clipf(untapped_sigmoidf(a), lo, hi);
    return logf(x != 0.0f ? c : 1.0f - c);
}
static inline float untapped_bern_ll_grad_binary(float x, float a, float g, float lo, float hi) {
    const float p = untapped_sigmoidf(a), c = untapped_clipf(p, lo, hi);
    const float inside = (p >= lo && p <= hi) ? 1.0f : 0.0f;
    return g * inside * ((x != 0.0f ? 1.0f : -1.0f) / (x != 0.0f ? c : 1.0f - c)) * (p * (1.0f - p));
}
/* Whether every x[j] is 0 or 1 (binarised data: the fast path above). */
static inline int untapped_binary_row(const float* x, npy_intp n) {
    int binary = 1;
    #pragma omp simd reduction(&:binary)
    for (npy_intp j = 0; j < n; ++j)
        binary &= (x[j] == 0.0f) | (x[j] == 1.0f);
    return binary;
}
"""

# A 2-D float32 argument's C view: data pointer and strides in elements.
_MATRIX_VIEW = """
        const float* {v}_p = (const float*)PyArray_DATA({arr});
        const npy_intp {v}_s0 = PyArray_STRIDES({arr})[0] / 4, {v}_s1 = PyArray_STRIDES({arr})[1] / 4;
"""


@functools.cache
def vector_math_libraries():
    """``['mvec']`` where glibc's vector math library exists (Linux), else ``[]``."""
    return ["mvec"] if ctypes.util.find_library("mvec") else []


class _RowOp(COp):
    """Shared C set-up of the row ops: OpenMP, libmvec, the helpers above."""

    __props__ = ()

    def c_support_code(self, **kwargs):
        return _ROW_SUPPORT + _TANH_SUPPORT

    def c_compile_args(self, **kwargs):
        # -fno-trapping-math (FP operations raise no traps; the values are
        # IEEE's either way) lets GCC evaluate both arms of the clip's
        # selects in one vector pass: 4x faster Bernoulli terms.
        return ["-fopenmp", "-fno-trapping-math"] + (["-DUNTAPPED_LIBMVEC"] if vector_math_libraries() else [])

    def c_libraries(self, **kwargs):
        return ["gomp"] + vector_math_libraries()

    def c_headers(self, **kwargs):
        return ["<math.h>", "<stdlib.h>", "<omp.h>"]

    def c_code_cache_version(self):
        return (14,)

    def _check(self, *arrays):
        for a in arrays:
            if a.type.dtype != "float32":
                raise TypeError(f"{type(self).__name__} works on float32, got {a.type}")

    def _matrices(self, sub, *pairs):
        """C that checks the matrices ``pairs`` = ((c_name, short), ...) share one shape and views them."""
        first = pairs[0][0]
        same = " || ".join(
            f"PyArray_NDIM({arr}) != 2 || PyArray_DIMS({arr})[0] != PyArray_DIMS({first})[0]"
            f" || PyArray_DIMS({arr})[1] != PyArray_DIMS({first})[1]"
            for arr, _ in pairs
        )
        code = f"""
        if ({same}) {{
            PyErr_SetString(PyExc_ValueError, "{type(self).__name__}: the inputs must be matrices of one shape");
            {sub["fail"]}
        }}
        const npy_intp n_rows = PyArray_DIMS({first})[0], n_cols = PyArray_DIMS({first})[1];
        """
        return code + "".join(_MATRIX_VIEW.format(v=v, arr=arr) for arr, v in pairs)

    def _bias(self, b, sub):
        """C that checks the float32 vector ``b`` has one entry a column and views it as a matrix
        whose every row is ``b`` (row stride 0): ``b_p``, ``b_s0``, ``b_s1``."""
        return f"""
        if (PyArray_NDIM({b}) != 1 || PyArray_DIMS({b})[0] != n_cols) {{
            PyErr_SetString(PyExc_ValueError, "{type(self).__name__}: the bias must have one entry a column");
            {sub["fail"]}
        }}
        const float* b_p = (const float*)PyArray_DATA({b});
        const npy_intp b_s0 = 0, b_s1 = PyArray_STRIDES({b})[0] / 4;
        """

    @staticmethod
    def _output(z, ndim, dims, sub, pointer="z_p"):
        """C that (re)allocates the C-contiguous float32 output ``z`` of shape ``dims``, data at ``pointer``."""
        same = " || ".join(f"PyArray_DIMS({z})[{i}] != {d}" for i, d in enumerate(dims))
        return f"""
        {{
            npy_intp z_dims[{ndim}] = {{{", ".join(dims)}}};
            if (!{z} || {same} || !PyArray_IS_C_CONTIGUOUS({z})) {{
                Py_XDECREF({z});
                {z} = (PyArrayObject*)PyArray_EMPTY({ndim}, z_dims, NPY_FLOAT32, 0);
                if (!{z}) {{ {sub["fail"]} }}
            }}
        }}
        float* {pointer} = (float*)PyArray_DATA({z});
        """

    def _elementwise(self, sub, z, views, expression, bias=None, column_sums=None):
        """C for ``z = expression`` elementwise over the same-shape float32 matrices ``views``.

        ``views`` = ((c_name, short), ...); ``expression(element)`` returns the
        C expression of one output element, with ``element(short)`` for the
        matching element of each input, and ``element('b')`` for the column's
        entry of the vector ``bias`` (a C name) if given. Rows run on OpenMP
        threads, columns as one SIMD loop where every input has unit column
        stride. With ``column_sums`` (a C name), that vector output also gets
        ``z``'s column sums, added as each row is written (in
        :class:`MatrixSum`'s order, see :func:`_column_sums_begin`).
        """
        shorts = [v for _, v in views] + (["b"] if bias else [])
        row_pointers = "".join(f"const float* {v}r = {v}_p + i * {v}_s0;\n            " for v in shorts)
        setup = self._matrices(sub, *views) + (self._bias(bias, sub) if bias else "")
        setup += self._output(z, 2, ["n_rows", "n_cols"], sub)
        add_row = """
            #pragma omp simd
            for (npy_intp j = 0; j < n_cols; ++j)
                acc[j] += zr[j];""" if column_sums else ""
        rows = f"""
        for (npy_intp i = 0; i < n_rows; ++i) {{
            {row_pointers}float* zr = z_p + i * n_cols;
            if ({_contiguous_rows(*shorts)}) {{
                #pragma omp simd
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = {expression(lambda v: f"{v}r[j]")};
            }} else {{
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = {expression(lambda v: f"{v}r[j * {v}_s1]")};
            }}{add_row}
        }}"""
        if column_sums is None:
            return "{" + setup + "\n        #pragma omp parallel for schedule(static)" + rows + "\n        }"
        sums = self._output(column_sums, 1, ["n_cols"], sub, "sums_p")
        return "{" + setup + sums + _column_sums_begin(sub) + rows + _column_sums_end("sums_p") + "}"


def _contiguous_rows(*shorts):
    """C condition: every named view has unit column stride (the SIMD path)."""
    return " && ".join(f"{v}_s1 == 1" for v in shorts)


class BiasTanh(_RowOp):
    """``tanh(a + b)`` for a (rows, units) pre-activation ``a`` and a bias vector ``b``: a tanh dense layer's output.

    The same function as ``ops.tanh(a + b)`` (the Cephes ``tanhf`` of
    :class:`FastTanh`), computed in one vectorised pass. Its gradient is
    ``g (1 - t^2)`` for ``a`` and the column sums of that for ``b``.
    """

    def make_node(self, a, b):
        a, b = pt.as_tensor_variable(a), pt.as_tensor_variable(b)
        self._check(a, b)
        if a.ndim != 2 or b.ndim != 1:
            raise TypeError("BiasTanh takes a matrix and a bias vector")
        return Apply(self, [a, b], [pt.matrix(dtype="float32", shape=a.type.shape)])

    def perform(self, node, inputs, outputs):
        a, b = inputs
        outputs[0][0] = np.tanh(a + b).astype(np.float32)

    def pullback(self, inputs, outputs, output_grads):
        (t,), (g,) = outputs, output_grads
        g_a, g_b = tanh_grad(g, t)
        return [g_a, g_b]

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0]]

    def c_code(self, node, name, inputs, outputs, sub):
        a, b = inputs
        (z,) = outputs
        return self._elementwise(sub, z, ((a, "a"),), lambda e: f"untapped_tanhf({e('a')} + {e('b')})", bias=b)


bias_tanh = BiasTanh()


class TanhGrad(_RowOp):
    """``g (1 - t^2)`` and its column sums: the gradients of a tanh layer ``t = tanh(a + b)``
    with respect to ``a`` and ``b``, for an upstream gradient ``g``, in one pass on all threads.

    The backward pass of every tanh layer (:class:`BiasTanh`); PyTensor's
    elementwise loop for it runs on one thread. The same float32 arithmetic,
    in the same order, as ``g * (1 - sqr(t))``; the column sums are
    :class:`MatrixSum`'s, bit for bit, without a pass of their own.
    """

    def make_node(self, g, t):
        g, t = pt.as_tensor_variable(g), pt.as_tensor_variable(t)
        self._check(g, t)
        if g.ndim != 2 or t.ndim != 2:
            raise TypeError("TanhGrad takes matrices")
        shape = tuple(s1 if s1 is not None else s2 for s1, s2 in zip(g.type.shape, t.type.shape))
        return Apply(self, [g, t], [pt.matrix(dtype="float32", shape=shape), pt.vector(dtype="float32", shape=shape[1:])])

    def perform(self, node, inputs, outputs):
        g, t = inputs
        g_a = (g * (np.float32(1) - t * t)).astype(np.float32)
        outputs[0][0] = g_a
        outputs[1][0] = g_a.sum(axis=0, dtype=np.float64).astype(np.float32)

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1], shapes[1][1:]]

    def c_code(self, node, name, inputs, outputs, sub):
        g, t = inputs
        z, sums = outputs
        gradient = lambda e: f"{e('g')} * (1.0f - {e('t')} * {e('t')})"  # noqa: E731
        return self._elementwise(sub, z, ((g, "g"), (t, "t")), gradient, column_sums=sums)


tanh_grad = TanhGrad()


def _int64_vector_view(arr, name, sub, op):
    """C that checks ``arr`` is an int64 vector and views it: ``{name}_p``, ``{name}_s`` (stride in elements), ``n_{name}``."""
    return f"""
        if (PyArray_NDIM({arr}) != 1 || PyArray_TYPE({arr}) != NPY_INT64) {{
            PyErr_SetString(PyExc_TypeError, "{op}: the row index must be an int64 vector");
            {sub["fail"]}
        }}
        const npy_int64* {name}_p = (const npy_int64*)PyArray_DATA({arr});
        const npy_intp {name}_s = PyArray_STRIDES({arr})[0] / 8;
        const npy_intp n_{name} = PyArray_DIMS({arr})[0];
        """


def _check_rows(rows, n, op):
    """NumPy would wrap negative rows around; the C code and this refuse them."""
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)][0]
        raise IndexError(f"{op}: row {bad} out of range for {n} rows")


class GatherRows(_RowOp):
    """``a[rows]``: the rows of a float32 matrix picked by an int64 index, copied on all threads.

    Its gradient is :class:`ScatterAddRows`. PyTensor's own gather has the
    same values; its gradient (``AdvancedIncSubtensor1``) runs ``np.add.at``
    in Python, ~90 ms for the decoder's 10,000 x 784 pre-activation.
    """

    def make_node(self, a, rows):
        a, rows = pt.as_tensor_variable(a), pt.as_tensor_variable(rows)
        self._check(a)
        if a.ndim != 2 or rows.ndim != 1 or rows.type.dtype != "int64":
            raise TypeError("GatherRows takes a float32 matrix and an int64 vector")
        return Apply(self, [a, rows], [pt.matrix(dtype="float32", shape=(rows.type.shape[0], a.type.shape[1]))])

    def perform(self, node, inputs, outputs):
        a, rows = inputs
        _check_rows(rows, a.shape[0], "GatherRows")
        outputs[0][0] = np.ascontiguousarray(a[rows])

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[1][0], shapes[0][1])]

    def connection_pattern(self, node):
        return [[True], [False]]

    def pullback(self, inputs, outputs, output_grads):
        a, rows = inputs
        (g,) = output_grads
        return [scatter_add_rows(g, rows, a.shape[0]), DisconnectedType()()]

    def c_code(self, node, name, inputs, outputs, sub):
        a, rows = inputs
        (z,) = outputs
        return "{" + _int64_vector_view(rows, "rows", sub, "GatherRows") + f"""
        if (PyArray_NDIM({a}) != 2) {{
            PyErr_SetString(PyExc_ValueError, "GatherRows: a must be a matrix");
            {sub["fail"]}
        }}
        const npy_intp n_source = PyArray_DIMS({a})[0], n_cols = PyArray_DIMS({a})[1];
        """ + _MATRIX_VIEW.format(v="a", arr=a) + f"""
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const npy_int64 r = rows_p[i * rows_s];
            if (r < 0 || r >= n_source) {{
                PyErr_Format(PyExc_IndexError, "GatherRows: row %lld out of range for %lld rows", (long long)r, (long long)n_source);
                {sub["fail"]}
            }}
        }}
        """ + self._output(z, 2, ["n_rows", "n_cols"], sub) + f"""
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const float* ar = a_p + rows_p[i * rows_s] * a_s0;
            float* zr = z_p + i * n_cols;
            if (a_s1 == 1) {{
                #pragma omp simd
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = ar[j];
            }} else {{
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = ar[j * a_s1];
            }}
        }}
        }}"""


gather_rows = GatherRows()


class ScatterAddRows(_RowOp):
    """``z = zeros(n, cols); z[rows[i]] += g[i]`` for every i: the gradient of :class:`GatherRows`.

    Each thread owns a band of columns and adds the rows in index order, so
    every sum is accumulated in float32 in the same order as NumPy's
    ``np.add.at`` (PyTensor's ``AdvancedIncSubtensor1``): the same values.
    """

    def make_node(self, g, rows, n):
        g, rows = pt.as_tensor_variable(g), pt.as_tensor_variable(rows)
        n = pt.cast(pt.as_tensor_variable(n), "int64")
        self._check(g)
        if g.ndim != 2 or rows.ndim != 1 or rows.type.dtype != "int64" or n.ndim != 0:
            raise TypeError("ScatterAddRows takes a float32 matrix, an int64 vector and a row count")
        return Apply(self, [g, rows, n], [pt.matrix(dtype="float32", shape=(None, g.type.shape[1]))])

    def perform(self, node, inputs, outputs):
        g, rows, n = inputs
        _check_rows(rows, int(n), "ScatterAddRows")
        z = np.zeros((int(n), g.shape[1]), np.float32)
        np.add.at(z, rows, g)
        outputs[0][0] = z

    def infer_shape(self, fgraph, node, shapes):
        return [(node.inputs[2], shapes[0][1])]

    def connection_pattern(self, node):
        return [[True], [False], [False]]

    def pullback(self, inputs, outputs, output_grads):
        _, rows, _ = inputs
        (gz,) = output_grads
        return [gather_rows(gz, rows), DisconnectedType()(), DisconnectedType()()]

    def c_code(self, node, name, inputs, outputs, sub):
        g, rows, n = inputs
        (z,) = outputs
        return "{" + _int64_vector_view(rows, "rows", sub, "ScatterAddRows") + f"""
        if (PyArray_NDIM({g}) != 2 || PyArray_DIMS({g})[0] != n_rows) {{
            PyErr_SetString(PyExc_ValueError, "ScatterAddRows: g must be a matrix with one row an index");
            {sub["fail"]}
        }}
        const npy_intp n_out = (npy_intp)*(const npy_int64*)PyArray_DATA({n});
        const npy_intp n_cols = PyArray_DIMS({g})[1];
        if (n_out < 0) {{
            PyErr_SetString(PyExc_ValueError, "ScatterAddRows: negative row count");
            {sub["fail"]}
        }}
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const npy_int64 r = rows_p[i * rows_s];
            if (r < 0 || r >= n_out) {{
                PyErr_Format(PyExc_IndexError, "ScatterAddRows: row %lld out of range for %lld rows", (long long)r, (long long)n_out);
                {sub["fail"]}
            }}
        }}
        """ + _MATRIX_VIEW.format(v="g", arr=g) + self._output(z, 2, ["n_out", "n_cols"], sub) + """
        #pragma omp parallel
        {
            const int t = omp_get_thread_num(), n_threads = omp_get_num_threads();
            const npy_intp j0 = n_cols * t / n_threads, j1 = n_cols * (t + 1) / n_threads;
            for (npy_intp r = 0; r < n_out; ++r)
                for (npy_intp j = j0; j < j1; ++j)
                    z_p[r * n_cols + j] = 0.0f;
            for (npy_intp i = 0; i < n_rows; ++i) {
                float* zr = z_p + rows_p[i * rows_s] * n_cols;
                const float* gr = g_p + i * g_s0;
                if (g_s1 == 1) {
                    #pragma omp simd
                    for (npy_intp j = j0; j < j1; ++j)
                        zr[j] += gr[j];
                } else {
                    for (npy_intp j = j0; j < j1; ++j)
                        zr[j] += gr[j * g_s1];
                }
            }
        }
        }"""


scatter_add_rows = ScatterAddRows()


class BernoulliSampleLogits(_RowOp):
    """The Bernoulli sample ``1[u < sigmoid(a + b)]`` from logits ``a + b`` and uniforms ``u``, as float32.

    The same draw as ``parmesan_compat``'s ``bernoulli_sample(sigmoid(a + b), u)``
    (a comparison: no gradient), without writing the probabilities; the
    rewrite :func:`untapped.rewrites.fuse_bernoulli_sample` puts it in. ``b``
    (a vector added to every row; zeros if omitted) is the decoder's output
    bias, added here rather than in a pass of its own (:func:`split_bias`).
    """

    def make_node(self, u, a, b=None):
        u, a, b = pt.as_tensor_variable(u), pt.as_tensor_variable(a), _bias_or_zeros(b, a)
        self._check(u, a, b)
        if u.ndim != 2 or a.ndim != 2 or b.ndim != 1:
            raise TypeError("BernoulliSampleLogits takes matrices u, a and a bias vector b")
        shape = tuple(s1 if s1 is not None else s2 for s1, s2 in zip(u.type.shape, a.type.shape))
        return Apply(self, [u, a, b], [pt.matrix(dtype="float32", shape=shape)])

    def perform(self, node, inputs, outputs):
        u, a, b = inputs
        p = (1.0 / (1.0 + np.exp(-(a + b)))).astype(np.float32)
        outputs[0][0] = (u < p).astype(np.float32)

    def pullback(self, inputs, outputs, output_grads):
        return [pt.zeros_like(v) for v in inputs]

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1]]

    def c_code(self, node, name, inputs, outputs, sub):
        u, a, b = inputs
        (z,) = outputs
        sample = lambda e: f"({e('u')} < untapped_sigmoidf({e('a')} + {e('b')})) ? 1.0f : 0.0f"  # noqa: E731
        return self._elementwise(sub, z, ((u, "u"), (a, "a")), sample, bias=b)


bernoulli_sample_logits = BernoulliSampleLogits()


class MatrixSum(_RowOp):
    """``x.sum(axis)`` of a float32 matrix, accumulated in float64 as PyTensor's ``Sum`` does, on all threads.

    The training step's bias gradients are column sums of (10,000, units)
    arrays, and its per-row log densities are row sums; PyTensor's ``Sum``
    runs them on one thread. Column sums give each thread a band of rows and
    add the threads' float64 partial sums at the end, so they equal
    PyTensor's up to float64 reassociation, rounded to float32.
    """

    __props__ = ("axis",)

    def __init__(self, axis):
        if axis not in (0, 1):
            raise ValueError("MatrixSum sums over axis 0 or 1")
        self.axis = axis

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        self._check(x)
        if x.ndim != 2:
            raise TypeError("MatrixSum takes a matrix")
        return Apply(self, [x], [pt.vector(dtype="float32", shape=(x.type.shape[1 - self.axis],))])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = inputs[0].sum(axis=self.axis, dtype=np.float64).astype(np.float32)

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[0][1 - self.axis],)]

    def pullback(self, inputs, outputs, output_grads):
        (x,), (g,) = inputs, output_grads
        return [pt.ones_like(x) * (g[None, :] if self.axis == 0 else g[:, None])]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (z,) = inputs, outputs
        view = self._matrices(sub, (x, "x"))
        if self.axis == 1:
            return "{" + view + self._output(z, 1, ["n_rows"], sub) + """
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n_rows; ++i) {
            const float* xr = x_p + i * x_s0;
            double acc = 0.0;
            if (x_s1 == 1) {
                #pragma omp simd reduction(+:acc)
                for (npy_intp j = 0; j < n_cols; ++j)
                    acc += xr[j];
            } else {
                for (npy_intp j = 0; j < n_cols; ++j)
                    acc += xr[j * x_s1];
            }
            z_p[i] = (float)acc;
        }
        }"""
        return "{" + view + self._output(z, 1, ["n_cols"], sub) + _column_sums_begin(sub) + """
            for (npy_intp i = 0; i < n_rows; ++i) {
                const float* xr = x_p + i * x_s0;
                if (x_s1 == 1) {
                    #pragma omp simd
                    for (npy_intp j = 0; j < n_cols; ++j)
                        acc[j] += xr[j];
                } else {
                    for (npy_intp j = 0; j < n_cols; ++j)
                        acc[j] += xr[j * x_s1];
                }
            }
        """ + _column_sums_end("z_p") + "}"


def _column_sums_begin(sub):
    """C that opens a parallel region whose threads each add their static band of
    rows into a float64 row ``acc`` of column sums; the caller's row loop follows
    (under ``omp for schedule(static)``), then :func:`_column_sums_end`.

    Every column sum made this way adds the same rows in the same order, so
    the bias gradients computed inside another op's pass equal
    :class:`MatrixSum`'s bit for bit.
    """
    return f"""
        const int n_threads = omp_get_max_threads();
        double* partial = (double*)calloc((size_t)n_threads * (size_t)(n_cols > 0 ? n_cols : 1), sizeof(double));
        if (!partial) {{
            PyErr_NoMemory();
            {sub["fail"]}
        }}
        #pragma omp parallel num_threads(n_threads)
        {{
            double* acc = partial + (size_t)omp_get_thread_num() * n_cols;
            #pragma omp for schedule(static)"""


def _column_sums_end(pointer):
    """C that closes :func:`_column_sums_begin`'s region and writes the column sums, in float32, to ``pointer``."""
    return f"""
        }}
        for (npy_intp j = 0; j < n_cols; ++j) {{
            double total = 0.0;
            for (int t = 0; t < n_threads; ++t)
                total += partial[(size_t)t * n_cols + j];
            {pointer}[j] = (float)total;
        }}
        free(partial);
        """


class _BernoulliLogLik(_RowOp):
    __props__ = ("eps",)

    def __init__(self, eps=1e-5):
        self.eps = float(eps)

    @property
    def bounds(self):
        return np.float32(self.eps), np.float32(1.0 - self.eps)

    def _mean_and_clipped(self, a, b):
        """NumPy: ``p = sigmoid(a + b)`` in float32 and ``c = clip(p, eps, 1 - eps)``."""
        p = (1.0 / (1.0 + np.exp(-(a + b)))).astype(np.float32)
        return p, np.clip(p, *self.bounds)

    def _c_bounds(self):
        lo, hi = (repr(float(v)) + "f" for v in self.bounds)
        return f"const float lo = {lo}, hi = {hi};\n"

    def _row_weights(self, g, sub):
        """C that checks the row weights ``g`` (one a row) and views them: ``g_p``, ``g_s``."""
        return f"""
        if (PyArray_NDIM({g}) != 1 || PyArray_DIMS({g})[0] != n_rows) {{
            PyErr_SetString(PyExc_ValueError, "{type(self).__name__}: g must have one entry a row");
            {sub["fail"]}
        }}
        const npy_intp g_s = PyArray_STRIDES({g})[0] / 4;
        const float* g_p = (const float*)PyArray_DATA({g});
        """

    def _row_pass(self, sub, x, a, b, g=None, value=None, gradient=None):
        """C for one pass over the rows of ``x`` and ``a + b``, writing the row values of the
        log-likelihood to ``value`` and/or, for row weights ``g``, its gradients to
        ``gradient`` = (g_a, g_b) (C names; either may be None).

        Each row takes the loop for binary rows (one log, one division) where
        it can; the value and the gradient are separate SIMD loops over the
        row, which GCC vectorises better than one loop doing both, and the
        second reads the row from cache. ``g_b``, the column sums of ``g_a``,
        is added up row by row in :class:`MatrixSum`'s order.
        """
        code = "{" + self._matrices(sub, (x, "x"), (a, "a")) + self._bias(b, sub) + self._c_bounds()
        if value:
            code += self._output(value, 1, ["n_rows"], sub, "value_p")
        if gradient:
            code += self._row_weights(g, sub) + self._output(gradient[0], 2, ["n_rows", "n_cols"], sub)
            code += self._output(gradient[1], 1, ["n_cols"], sub, "z_b_p") + _column_sums_begin(sub)
        else:
            code += "\n        #pragma omp parallel for schedule(static)"

        def loops(binary, element, simd):
            suffix = "_binary" if binary else ""
            xj, aj = element("x"), f"{element('a')} + {element('b')}"
            pragma = "#pragma omp simd" if simd else ""
            body = ""
            if value:
                body += f"""
                    {pragma}{" reduction(+:row_value)" if simd else ""}
                    for (npy_intp j = 0; j < n_cols; ++j)
                        row_value += untapped_bern_ll{suffix}({xj}, {aj}, lo, hi);"""
            if gradient:
                body += f"""
                    {pragma}
                    for (npy_intp j = 0; j < n_cols; ++j)
                        zr[j] = untapped_bern_ll_grad{suffix}({xj}, {aj}, gi, lo, hi);"""
            return body

        contiguous = lambda v: "b_p[j]" if v == "b" else f"{v}r[j]"  # noqa: E731
        strided = lambda v: f"{v}_p[j * {v}_s1]" if v == "b" else f"{v}r[j * {v}_s1]"  # noqa: E731
        code += f"""
            for (npy_intp i = 0; i < n_rows; ++i) {{
                const float* xr = x_p + i * x_s0;
                const float* ar = a_p + i * a_s0;
                {"float* zr = z_p + i * n_cols; const float gi = g_p[i * g_s];" if gradient else ""}
                double row_value = 0.0;
                if ({_contiguous_rows("x", "a", "b")}) {{
                    if (untapped_binary_row(xr, n_cols)) {{{loops(True, contiguous, True)}
                    }} else {{{loops(False, contiguous, True)}
                    }}
                }} else {{{loops(False, strided, False)}
                }}"""
        if value:
            code += """
                value_p[i] = (float)row_value;"""
        if gradient:
            code += """
                #pragma omp simd
                for (npy_intp j = 0; j < n_cols; ++j)
                    acc[j] += zr[j];"""
        code += """
            }"""
        return code + (_column_sums_end("z_b_p") if gradient else "") + "\n        }"


class BernoulliLogLikRows(_BernoulliLogLik):
    """``sum_d [x log c + (1 - x) log(1 - c)]`` per row, ``c = clip(sigmoid(a + b), eps, 1 - eps)``.

    One pass over ``x`` and the pre-activation ``a`` (both (rows, d) float32)
    plus the vector ``b`` added to every row (the decoder's output bias;
    zeros if omitted); nothing of size (rows, d) is written. Rows of ``x``
    that are all 0 or 1 take one log an element instead of two (the same
    value exactly). The same values as ``sum(log_bernoulli(x, sigmoid(a + b)), -1)``
    up to float32 rounding (the row sum is accumulated in float64).
    """

    def make_node(self, x, a, b=None):
        x, a, b = pt.as_tensor_variable(x), pt.as_tensor_variable(a), _bias_or_zeros(b, a)
        self._check(x, a, b)
        return Apply(self, [x, a, b], [pt.vector(dtype="float32", shape=(a.type.shape[0],))])

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[1][0],)]

    def perform(self, node, inputs, outputs):
        x, a, b = inputs
        _, c = self._mean_and_clipped(a, b)
        outputs[0][0] = np.sum(x * np.log(c) + (1 - x) * np.log(1 - c), axis=-1, dtype=np.float64).astype(np.float32)

    def pullback(self, inputs, outputs, output_grads):
        x, a, b = inputs
        (g,) = output_grads
        lo, hi = self.bounds
        c = pt.clip(pt.sigmoid(a + b[None, :]), lo, hi)
        g_x = g[:, None] * (pt.log(c) - pt.log(1.0 - c))
        g_a, g_b = BernoulliLogLikRowsGrad(self.eps)(x, a, g, b)
        return [g_x, g_a, g_b]

    def c_code(self, node, name, inputs, outputs, sub):
        x, a, b = inputs
        (value,) = outputs
        return self._row_pass(sub, x, a, b, value=value)


class BernoulliLogLikRowsGrad(_BernoulliLogLik):
    """The gradients of :class:`BernoulliLogLikRows` with respect to ``a`` and ``b``, for row weights ``g``.

    Returns ``(g_a, g_b)``: ``g_b``, the column sums of ``g_a``, is added up
    in the same pass, in :class:`MatrixSum`'s order (the same float32 values
    as summing ``g_a`` afterwards), so the decoder's output-bias gradient
    costs no pass of its own.
    """

    def make_node(self, x, a, g, b=None):
        x, a, g, b = pt.as_tensor_variable(x), pt.as_tensor_variable(a), pt.as_tensor_variable(g), _bias_or_zeros(b, a)
        self._check(x, a, g, b)
        return Apply(self, [x, a, g, b], [a.type(), pt.vector(dtype="float32", shape=(a.type.shape[1],))])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1], (shapes[1][1],)]

    def perform(self, node, inputs, outputs):
        x, a, g, b = inputs
        lo, hi = self.bounds
        p, c = self._mean_and_clipped(a, b)
        inside = ((p >= lo) & (p <= hi)).astype(np.float32)
        g_a = (g[:, None] * inside * (x / c - (1 - x) / (1 - c)) * (p * (1 - p))).astype(np.float32)
        outputs[0][0] = g_a
        outputs[1][0] = g_a.sum(axis=0, dtype=np.float64).astype(np.float32)

    def c_code(self, node, name, inputs, outputs, sub):
        x, a, g, b = inputs
        return self._row_pass(sub, x, a, b, g, gradient=outputs)


class BernoulliLogLikRowsAndGrad(_BernoulliLogLik):
    """:class:`BernoulliLogLikRows` and :class:`BernoulliLogLikRowsGrad` of the same ``(x, a, b)`` in one pass.

    Returns ``(value, g_a, g_b)``, the two ops' outputs. The training step's
    row weights ``g`` are constants (a term's coefficient over the batch
    size), known before the value, so the rewrite
    :func:`untapped.rewrites.fuse_bernoulli_value_and_gradient` computes the
    gradient in the forward pass: ``x`` and ``a`` are read from memory once
    instead of twice (the gradient's loop over a row finds it in cache).
    """

    def make_node(self, x, a, g, b=None):
        value = BernoulliLogLikRows(self.eps).make_node(x, a, b)
        gradient = BernoulliLogLikRowsGrad(self.eps).make_node(x, a, g, b)
        return Apply(self, gradient.inputs, [out.type() for out in value.outputs + gradient.outputs])

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[1][0],), shapes[1], (shapes[1][1],)]

    def perform(self, node, inputs, outputs):
        x, a, g, b = inputs
        value, g_a, g_b = ([None] for _ in range(3))
        BernoulliLogLikRows(self.eps).perform(None, [x, a, b], [value])
        BernoulliLogLikRowsGrad(self.eps).perform(None, [x, a, g, b], [g_a, g_b])
        for out, computed in zip(outputs, (value, g_a, g_b)):
            out[0] = computed[0]

    def c_code(self, node, name, inputs, outputs, sub):
        x, a, g, b = inputs
        value, g_a, g_b = outputs
        return self._row_pass(sub, x, a, b, g, value=value, gradient=(g_a, g_b))


def _bias_or_zeros(b, a):
    """``b`` as a tensor, or float32 zeros of ``a``'s width when ``b`` is None."""
    if b is None:
        return pt.zeros((a.shape[-1],), dtype="float32")
    return pt.as_tensor_variable(b)


def split_bias(a):
    """``(m, b)`` when ``a`` is ``m + b[None, :]`` (a dense layer's pre-activation: a float32
    matrix plus a bias vector broadcast over its rows), else ``(a, None)``.

    The Bernoulli ops take ``m`` and ``b`` and add the bias in their own
    pass, which saves a (rows, 784) pass over the decoder's output.
    """
    owner = a.owner
    if owner is None or not isinstance(owner.op, Elemwise) or not isinstance(owner.op.scalar_op, ps.Add):
        return a, None
    if len(owner.inputs) != 2 or a.ndim != 2 or a.type.dtype != "float32":
        return a, None
    for m, row in (owner.inputs, owner.inputs[::-1]):
        expand = row.owner
        if (
            m.type.dtype == "float32"
            and m.type.broadcastable == a.type.broadcastable
            and expand is not None
            and isinstance(expand.op, DimShuffle)
            and tuple(expand.op.new_order) == ("x", 0)
            and expand.inputs[0].type.dtype == "float32"
        ):
            return m, expand.inputs[0]
    return a, None


def bernoulli_log_lik_rows(x, p, eps=1e-5):
    """Row sums of ``log_bernoulli(x, p, eps)``; fused with the sigmoid when ``p = sigmoid(a)`` in float32.

    A dense layer's bias in ``a`` goes into the op too (:func:`split_bias`).
    Returns ``None`` when the fused op does not apply (``p`` is not a
    sigmoid's output, or the graph is not float32); the caller then builds
    the plain expression.
    """
    owner = getattr(p, "owner", None)
    if owner is None or not isinstance(owner.op, Elemwise) or owner.op.scalar_op != ps.sigmoid:
        return None
    x = pt.as_tensor_variable(x)
    (a,) = owner.inputs
    if x.ndim != 2 or a.ndim != 2 or x.type.dtype != "float32" or a.type.dtype != "float32":
        return None
    return BernoulliLogLikRows(eps)(x, *split_bias(a))


# --------------------------------------------------------------------------
# Matrix product in the orientation BLAS runs fastest


class Matmul(Op):
    """``x @ y`` for float32 matrices, computed as ``(y.T @ x.T).T`` when the result is wide.

    OpenBLAS (through NumPy) multiplies much faster into a tall result than a
    wide one when the inner dimension is long: the weight gradients
    ``h.T @ d`` (e.g. 500 x 10,000 x 784) run 2-6x faster as ``(d.T @ h).T``.
    The products are the same sums (float32 reassociation at most). The
    gradient uses the same op, so the backward products pick their
    orientation too. A wide result is returned as a transposed
    (Fortran-ordered) view.
    """

    __props__ = ()

    def make_node(self, x, y):
        x, y = pt.as_tensor_variable(x), pt.as_tensor_variable(y)
        if x.ndim != 2 or y.ndim != 2:
            raise TypeError("Matmul multiplies matrices")
        dtype = pt.as_tensor_variable(np.zeros((), x.type.dtype) * np.zeros((), y.type.dtype)).type.dtype
        return Apply(self, [x, y], [pt.matrix(dtype=dtype, shape=(x.type.shape[0], y.type.shape[1]))])

    def perform(self, node, inputs, outputs):
        x, y = inputs
        if x.shape[0] < y.shape[1]:
            z = np.dot(y.T, x.T).T
        else:
            z = np.dot(x, y)
        outputs[0][0] = z.astype(node.outputs[0].type.dtype, copy=False)

    def infer_shape(self, fgraph, node, shapes):
        return [(shapes[0][0], shapes[1][1])]

    def pullback(self, inputs, outputs, output_grads):
        x, y = inputs
        (g,) = output_grads
        return [matmul(g, y.T), matmul(x.T, g)]


matmul = Matmul()
