"""What the C kernels of :mod:`untapped.fast` share: the support code, matrix views and the row-op base.

Each row op runs its rows on OpenMP threads and its columns as one SIMD loop.
Where glibc's vector math library (libmvec) exists, expf / logf are
declared as having vector versions (as glibc's own math.h does under
-ffast-math), so GCC calls libmvec in those loops. Not -ffast-math
itself: a module built with it sets flush-to-zero for the whole process
when loaded. The vector functions differ from the scalar ones by float32
rounding only (``tests/test_ops.py``).
"""

import ctypes.util
import functools

from pytensor.link.c.op import COp

TANH_SUPPORT = r"""
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



ROW_SUPPORT = r"""
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
   and x / c - (1 - x) / (1 - c) exactly 1 / c or -1 / (1 - c).
   The _p forms take the mean p = sigmoid(a) already computed. */
static inline float untapped_bern_ll_binary_p(float x, float p, float lo, float hi) {
    const float c = untapped_clipf(p, lo, hi);
    return logf(x != 0.0f ? c : 1.0f - c);
}
static inline float untapped_bern_ll_grad_binary_p(float x, float p, float g, float lo, float hi) {
    const float c = untapped_clipf(p, lo, hi);
    const float inside = (p >= lo && p <= hi) ? 1.0f : 0.0f;
    return g * inside * ((x != 0.0f ? 1.0f : -1.0f) / (x != 0.0f ? c : 1.0f - c)) * (p * (1.0f - p));
}
static inline float untapped_bern_ll_binary(float x, float a, float lo, float hi) {
    return untapped_bern_ll_binary_p(x, untapped_sigmoidf(a), lo, hi);
}
static inline float untapped_bern_ll_grad_binary(float x, float a, float g, float lo, float hi) {
    return untapped_bern_ll_grad_binary_p(x, untapped_sigmoidf(a), g, lo, hi);
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
MATRIX_VIEW = """
        const float* {v}_p = (const float*)PyArray_DATA({arr});
        const npy_intp {v}_s0 = PyArray_STRIDES({arr})[0] / 4, {v}_s1 = PyArray_STRIDES({arr})[1] / 4;
"""


@functools.cache
def vector_math_libraries():
    """``['mvec']`` where glibc's vector math library exists (Linux), else ``[]``."""
    return ["mvec"] if ctypes.util.find_library("mvec") else []


class RowOp(COp):
    """Shared C set-up of the row ops: OpenMP, libmvec, the helpers above."""

    __props__ = ()

    def c_support_code(self, **kwargs):
        return ROW_SUPPORT + TANH_SUPPORT

    def c_compile_args(self, **kwargs):
        # -fno-trapping-math (FP operations raise no traps; the values are
        # IEEE's either way) lets GCC evaluate both arms of the clip's
        # selects in one vector pass (docs/speed.md, *What makes it fast*).
        return ["-fopenmp", "-fno-trapping-math"] + (["-DUNTAPPED_LIBMVEC"] if vector_math_libraries() else [])

    def c_libraries(self, **kwargs):
        return ["gomp"] + vector_math_libraries()

    def c_headers(self, **kwargs):
        return ["<math.h>", "<stdlib.h>", "<omp.h>"]

    def c_code_cache_version(self):
        return (16,)

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
        return code + "".join(MATRIX_VIEW.format(v=v, arr=arr) for arr, v in pairs)

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
        :class:`MatrixSum`'s order, see :func:`column_sums_begin`).
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
            if ({contiguous_rows(*shorts)}) {{
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
        return "{" + setup + sums + column_sums_begin(sub) + rows + column_sums_end("sums_p") + "}"


def contiguous_rows(*shorts):
    """C condition: every named view has unit column stride (the SIMD path)."""
    return " && ".join(f"{v}_s1 == 1" for v in shorts)


def int64_vector_view(arr, name, sub, op):
    """C that checks ``arr`` is an int64 vector and views it: ``{name}_p``, ``{name}_s`` (stride in elements),
    ``n_{name}``."""
    return f"""
        if (PyArray_NDIM({arr}) != 1 || PyArray_TYPE({arr}) != NPY_INT64) {{
            PyErr_SetString(PyExc_TypeError, "{op}: the row index must be an int64 vector");
            {sub["fail"]}
        }}
        const npy_int64* {name}_p = (const npy_int64*)PyArray_DATA({arr});
        const npy_intp {name}_s = PyArray_STRIDES({arr})[0] / 8;
        const npy_intp n_{name} = PyArray_DIMS({arr})[0];
        """



def column_sums_begin(sub):
    """C that opens a parallel region whose threads each add their static band of
    rows into a float64 row ``acc`` of column sums; the caller's row loop follows
    (under ``omp for schedule(static)``), then :func:`column_sums_end`.

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


def column_sums_end(pointer):
    """C that closes :func:`column_sums_begin`'s region and writes the column sums, in float32, to ``pointer``."""
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


