"""Row gathers and scatters and matrix sums, on all threads.

- :class:`GatherRows` picks a batch's rows of a float32 matrix (``x[rows]``);
  its gradient :class:`ScatterAddRows` adds them back, in C instead of
  PyTensor's ``np.add.at`` in Python.
- :class:`MatrixSum` is a float32 matrix's row or column sum (the bias
  gradients, the per-row densities), float64-accumulated on all threads.
"""

import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply

from untapped.fast import compat
from untapped.fast.codegen import MATRIX_VIEW, RowOp, column_sums_begin, column_sums_end, int64_vector_view


def _check_rows(rows, n, op):
    """NumPy would wrap negative rows around; the C code and this refuse them."""
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)][0]
        raise IndexError(f"{op}: row {bad} out of range for {n} rows")


class GatherRows(RowOp):
    """``a[rows]``: the rows of a float32 matrix picked by an int64 index, copied on all threads.

    Its gradient is :class:`ScatterAddRows`. PyTensor's own gather has the
    same values; its gradient, an advanced increment, runs on one thread
    (on PyTensor 3.0 as ``np.add.at`` in Python), on the decoder's
    10,000 x 784 pre-activation.
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

    @compat.infer_shape
    def infer_shape(self, node, shapes):
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
        return "{" + int64_vector_view(rows, "rows", sub, "GatherRows") + f"""
        if (PyArray_NDIM({a}) != 2) {{
            PyErr_SetString(PyExc_ValueError, "GatherRows: a must be a matrix");
            {sub["fail"]}
        }}
        const npy_intp n_source = PyArray_DIMS({a})[0], n_cols = PyArray_DIMS({a})[1];
        """ + MATRIX_VIEW.format(v="a", arr=a) + f"""
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const npy_int64 r = rows_p[i * rows_s];
            if (r < 0 || r >= n_source) {{
                PyErr_Format(PyExc_IndexError, "GatherRows: row %lld out of range for %lld rows",
                             (long long)r, (long long)n_source);
                {sub["fail"]}
            }}
        }}
        """ + self._output(z, 2, ["n_rows", "n_cols"], sub) + """
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n_rows; ++i) {
            const float* ar = a_p + rows_p[i * rows_s] * a_s0;
            float* zr = z_p + i * n_cols;
            if (a_s1 == 1) {
                #pragma omp simd
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = ar[j];
            } else {
                for (npy_intp j = 0; j < n_cols; ++j)
                    zr[j] = ar[j * a_s1];
            }
        }
        }"""


gather_rows = GatherRows()


class ScatterAddRows(RowOp):
    """``z = zeros(n, cols); z[rows[i]] += g[i]`` for every i: the gradient of :class:`GatherRows`.

    Each thread owns a band of columns and adds the rows in index order, so
    every sum is accumulated in float32 in the same order as NumPy's
    ``np.add.at`` (PyTensor's advanced increment): the same values.
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

    @compat.infer_shape
    def infer_shape(self, node, shapes):
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
        return "{" + int64_vector_view(rows, "rows", sub, "ScatterAddRows") + f"""
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
                PyErr_Format(PyExc_IndexError, "ScatterAddRows: row %lld out of range for %lld rows",
                             (long long)r, (long long)n_out);
                {sub["fail"]}
            }}
        }}
        """ + MATRIX_VIEW.format(v="g", arr=g) + self._output(z, 2, ["n_out", "n_cols"], sub) + """
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


class MatrixSum(RowOp):
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

    @compat.infer_shape
    def infer_shape(self, node, shapes):
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
        return "{" + view + self._output(z, 1, ["n_cols"], sub) + column_sums_begin(sub) + """
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
        """ + column_sums_end("z_p") + "}"
