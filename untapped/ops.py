"""Elementwise ops with faster float32 C code than PyTensor's defaults.

PyTensor's C code for ``tanh`` calls the C library's scalar ``tanhf``
(about 12-17 ns an element on the benchmark machine); the decoder applies it
to 22.5 million elements a training step. :data:`tanh` here is the same
function, computed as the Cephes library's ``tanhf`` does, with branch-free
float32 code the compiler can vectorise:

- ``|x| < 0.625``: the odd minimax polynomial ``x + x^3 P(x^2)``;
- otherwise: ``sign(x) (1 - 2 / (exp(2|x|) + 1))``.

Its error is a few float32 ulps (about 1e-7 relative, measured against
NumPy's float64 ``tanh`` in ``tests/test_ops.py``), the size of a float32
reassociation, so the values stay within the reference tolerances. It is a
:class:`pytensor.scalar.UnaryScalarOp`, so PyTensor fuses it with the bias
add and the gradient ``g (1 - tanh(x)^2)`` like its own ``tanh``. In float64
graphs (and in the Python implementation) it is NumPy's ``tanh``.
"""

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.c.op import COp
from pytensor.scalar.basic import UnaryScalarOp, float_types, upgrade_to_float
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.random.op import RandomVariable


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

    def c_code(self, node, name, inputs, outputs, sub):
        (x,) = inputs
        (z,) = outputs
        if node.outputs[0].type.dtype != "float32":
            cast = node.outputs[0].type.dtype_specs()[1]
            return f"{z} = tanh(({cast}){x});"
        return f"""{{
            const float t_x = {x};
            const float t_a = fabsf(t_x);
            const float t_s = t_x * t_x;
            const float t_p = ((((-5.70498872745E-3f * t_s + 2.06390887954E-2f) * t_s
                                 - 5.37397155531E-2f) * t_s + 1.33314422036E-1f) * t_s
                               - 3.33332819422E-1f) * t_s * t_a + t_a;
            const float t_e = expf(2.0f * t_a);
            {z} = copysignf((t_a < 0.625f) ? t_p : 1.0f - 2.0f / (t_e + 1.0f), t_x);
        }}"""

    def c_code_cache_version(self):
        return (2,)


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
        return rng.random(size=size, dtype=np.float32)


standard_uniform_float32 = StandardUniformFloat32RV()


def uniform_float32(rng, size):
    """``(next_rng, draw)``: a float32 U[0, 1) array of shape ``size`` from the shared generator ``rng``."""
    return standard_uniform_float32(size=size, rng=rng, return_next_rng=True)


# --------------------------------------------------------------------------
# The decoder's Bernoulli log-likelihood, fused with its sigmoid

_BERNOULLI_SUPPORT = r"""
/* p = sigmoid(a) as PyTensor computes it; the clip and the log terms of
   parmesan_compat.distributions.log_bernoulli, for one element. */
static inline float untapped_bern_ll(float x, float a, float lo, float hi) {
    const float p = 1.0f / (1.0f + expf(-a));
    const float c = p < lo ? lo : (p > hi ? hi : p);
    return x * logf(c) + (1.0f - x) * logf(1.0f - c);
}
/* d/da of the same, times g: the clip passes the gradient where lo <= p <= hi. */
static inline float untapped_bern_ll_grad(float x, float a, float g, float lo, float hi) {
    const float p = 1.0f / (1.0f + expf(-a));
    const float c = p < lo ? lo : (p > hi ? hi : p);
    const float inside = (p >= lo && p <= hi) ? 1.0f : 0.0f;
    return g * inside * (x / c - (1.0f - x) / (1.0f - c)) * (p * (1.0f - p));
}
"""


class _BernoulliBase(COp):
    __props__ = ("eps",)

    def __init__(self, eps=1e-5):
        self.eps = float(eps)

    @property
    def bounds(self):
        return np.float32(self.eps), np.float32(1.0 - self.eps)

    def c_support_code(self, **kwargs):
        return _BERNOULLI_SUPPORT

    def c_compile_args(self, **kwargs):
        return ["-fopenmp"]

    def c_libraries(self, **kwargs):
        return ["gomp"]

    def c_headers(self, **kwargs):
        return ["<math.h>", "<omp.h>"]

    def _check(self, *arrays):
        for a in arrays:
            if a.type.dtype != "float32":
                raise TypeError(f"{type(self).__name__} works on float32, got {a.type}")

    def _c_prelude(self, inputs, sub):
        x, a = inputs[:2]
        fail = sub["fail"]
        lo, hi = (repr(float(v)) + "f" for v in self.bounds)
        return f"""
        if (PyArray_NDIM({x}) != 2 || PyArray_NDIM({a}) != 2
            || PyArray_DIMS({x})[0] != PyArray_DIMS({a})[0] || PyArray_DIMS({x})[1] != PyArray_DIMS({a})[1]) {{
            PyErr_SetString(PyExc_ValueError, "{type(self).__name__}: x and a must be matrices of one shape");
            {fail}
        }}
        const npy_intp n_rows = PyArray_DIMS({a})[0], n_cols = PyArray_DIMS({a})[1];
        const npy_intp xs0 = PyArray_STRIDES({x})[0] / 4, xs1 = PyArray_STRIDES({x})[1] / 4;
        const npy_intp as0 = PyArray_STRIDES({a})[0] / 4, as1 = PyArray_STRIDES({a})[1] / 4;
        const float* xp = (const float*)PyArray_DATA({x});
        const float* ap = (const float*)PyArray_DATA({a});
        const float lo = {lo}, hi = {hi};
        """


class BernoulliLogLikRows(_BernoulliBase):
    """``sum_d [x log c + (1 - x) log(1 - c)]`` per row, ``c = clip(sigmoid(a), eps, 1 - eps)``.

    One pass over ``x`` and the pre-activation ``a`` (both (rows, d) float32),
    rows shared out among OpenMP threads; nothing of size (rows, d) is
    written. The same values as ``sum(log_bernoulli(x, sigmoid(a)), -1)`` up
    to float32 rounding (the row sum is accumulated in float64).
    """

    def make_node(self, x, a):
        x, a = pt.as_tensor_variable(x), pt.as_tensor_variable(a)
        self._check(x, a)
        return Apply(self, [x, a], [pt.vector(dtype="float32", shape=(a.type.shape[0],))])

    def perform(self, node, inputs, outputs):
        x, a = inputs
        lo, hi = self.bounds
        p = (1.0 / (1.0 + np.exp(-a))).astype(np.float32)
        c = np.clip(p, lo, hi)
        outputs[0][0] = np.sum(x * np.log(c) + (1 - x) * np.log(1 - c), axis=-1, dtype=np.float64).astype(np.float32)

    def pullback(self, inputs, outputs, output_grads):
        x, a = inputs
        (g,) = output_grads
        lo, hi = self.bounds
        c = pt.clip(pt.sigmoid(a), lo, hi)
        g_x = g[:, None] * (pt.log(c) - pt.log(1.0 - c))
        return [g_x, BernoulliLogLikRowsGrad(self.eps)(x, a, g)]

    def c_code(self, node, name, inputs, outputs, sub):
        x, a = inputs
        (z,) = outputs
        fail = sub["fail"]
        return "{" + self._c_prelude(inputs, sub) + f"""
        npy_intp dims[1] = {{n_rows}};
        if (!{z} || PyArray_DIMS({z})[0] != n_rows || !PyArray_IS_C_CONTIGUOUS({z})) {{
            Py_XDECREF({z});
            {z} = (PyArrayObject*)PyArray_EMPTY(1, dims, NPY_FLOAT32, 0);
            if (!{z}) {{ {fail} }}
        }}
        float* zp = (float*)PyArray_DATA({z});
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const float* xr = xp + i * xs0;
            const float* ar = ap + i * as0;
            double acc = 0.0;
            if (xs1 == 1 && as1 == 1) {{
                for (npy_intp j = 0; j < n_cols; ++j)
                    acc += untapped_bern_ll(xr[j], ar[j], lo, hi);
            }} else {{
                for (npy_intp j = 0; j < n_cols; ++j)
                    acc += untapped_bern_ll(xr[j * xs1], ar[j * as1], lo, hi);
            }}
            zp[i] = (float)acc;
        }}
        }}"""

    def c_code_cache_version(self):
        return (1,)


class BernoulliLogLikRowsGrad(_BernoulliBase):
    """The gradient of :class:`BernoulliLogLikRows` with respect to ``a``, for row weights ``g``."""

    def make_node(self, x, a, g):
        x, a, g = (pt.as_tensor_variable(v) for v in (x, a, g))
        self._check(x, a, g)
        return Apply(self, [x, a, g], [a.type()])

    def perform(self, node, inputs, outputs):
        x, a, g = inputs
        lo, hi = self.bounds
        p = (1.0 / (1.0 + np.exp(-a))).astype(np.float32)
        c = np.clip(p, lo, hi)
        inside = ((p >= lo) & (p <= hi)).astype(np.float32)
        outputs[0][0] = (g[:, None] * inside * (x / c - (1 - x) / (1 - c)) * (p * (1 - p))).astype(np.float32)

    def c_code(self, node, name, inputs, outputs, sub):
        x, a, g = inputs
        (z,) = outputs
        fail = sub["fail"]
        return "{" + self._c_prelude(inputs, sub) + f"""
        if (PyArray_NDIM({g}) != 1 || PyArray_DIMS({g})[0] != n_rows) {{
            PyErr_SetString(PyExc_ValueError, "BernoulliLogLikRowsGrad: g must have one entry a row");
            {fail}
        }}
        if (!{z} || PyArray_DIMS({z})[0] != n_rows || PyArray_DIMS({z})[1] != n_cols || !PyArray_IS_C_CONTIGUOUS({z})) {{
            Py_XDECREF({z});
            {z} = (PyArrayObject*)PyArray_EMPTY(2, PyArray_DIMS({a}), NPY_FLOAT32, 0);
            if (!{z}) {{ {fail} }}
        }}
        const npy_intp gs = PyArray_STRIDES({g})[0] / 4;
        const float* gp = (const float*)PyArray_DATA({g});
        float* zp = (float*)PyArray_DATA({z});
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const float* xr = xp + i * xs0;
            const float* ar = ap + i * as0;
            float* zr = zp + i * n_cols;
            const float gi = gp[i * gs];
            if (xs1 == 1 && as1 == 1) {{
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = untapped_bern_ll_grad(xr[j], ar[j], gi, lo, hi);
            }} else {{
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = untapped_bern_ll_grad(xr[j * xs1], ar[j * as1], gi, lo, hi);
            }}
        }}
        }}"""

    def c_code_cache_version(self):
        return (1,)


def bernoulli_log_lik_rows(x, p, eps=1e-5):
    """Row sums of ``log_bernoulli(x, p, eps)``; fused with the sigmoid when ``p = sigmoid(a)`` in float32.

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
    return BernoulliLogLikRows(eps)(x, a)


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
