"""The decoder's Bernoulli output in one pass: its log-likelihood, the gradient, and the sample.

- :class:`BernoulliLogLikRows` (and its gradient) is the decoder's output
  bias, sigmoid, clip, Bernoulli log terms and row sum in one pass, writing
  nothing of size (rows, 784); :class:`BernoulliLogLikRowsAndGrad` is both
  in one pass;
- :class:`BernoulliSampleLogits` is the sample ``1[u < sigmoid(a + b)]``;
  :class:`BernoulliSampleSquaredDistanceRows` is that sample's squared
  distance to the data, row by row, without writing the sample.

Each is tested against the paper layer's formulas
(:func:`untapped.paper.densities.log_p_x`, ``parmesan_compat``'s
``bernoulli_sample``) in ``tests/test_ops.py``.
"""

import numpy as np
import pytensor.scalar as ps
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.tensor.elemwise import DimShuffle, Elemwise

from untapped.fast import compat
from untapped.fast.codegen import RowOp, column_sums_begin, column_sums_end, contiguous_rows
from untapped.fast.patterns import sigmoid_input


class BernoulliSampleLogits(RowOp):
    """The Bernoulli sample ``1[u < sigmoid(a + b)]`` from logits ``a + b`` and uniforms ``u``, as float32.

    The same draw as ``parmesan_compat``'s ``bernoulli_sample(sigmoid(a + b), u)``
    (a comparison: no gradient), without writing the probabilities; the
    rewrite :func:`untapped.fast.rewrites.fuse_bernoulli_sample` puts it in. ``b``
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

    @compat.infer_shape
    def infer_shape(self, node, shapes):
        return [shapes[1]]

    def c_code(self, node, name, inputs, outputs, sub):
        u, a, b = inputs
        (z,) = outputs
        sample = lambda e: f"({e('u')} < untapped_sigmoidf({e('a')} + {e('b')})) ? 1.0f : 0.0f"  # noqa: E731
        return self._elementwise(sub, z, ((u, "u"), (a, "a")), sample, bias=b)


bernoulli_sample_logits = BernoulliSampleLogits()


class BernoulliSampleSquaredDistanceRows(RowOp):
    """``sum_d (1[u < sigmoid(a + b)] - x)^2`` per row: a Bernoulli sample's squared distance to ``x``.

    :class:`BernoulliSampleLogits` followed by the row sums of the squared
    differences (J_r^d, eq. 7, :func:`untapped.paper.terms.y_to_x_loss`,
    before its square root), in one pass that writes one number a row
    instead of the (rows, d) sample and its squared differences. The
    rewrite :func:`untapped.fast.rewrites.fuse_bernoulli_sample_distance`
    puts it in where nothing else reads the sample. The same float32
    squares, summed in float64 as :class:`untapped.fast.rows.MatrixSum` sums
    a row; for binary ``x`` every square is 0 or 1 and the sums are exact.
    No gradient (the sample is a comparison).
    """

    def make_node(self, u, a, b, x):
        u, a, b, x = (pt.as_tensor_variable(v) for v in (u, a, b, x))
        self._check(u, a, b, x)
        if u.ndim != 2 or a.ndim != 2 or b.ndim != 1 or x.ndim != 2:
            raise TypeError("BernoulliSampleSquaredDistanceRows takes matrices u, a, x and a bias vector b")
        return Apply(self, [u, a, b, x], [pt.vector(dtype="float32", shape=(a.type.shape[0],))])

    def perform(self, node, inputs, outputs):
        u, a, b, x = inputs
        p = (1.0 / (1.0 + np.exp(-(a + b)))).astype(np.float32)
        d = (u < p).astype(np.float32) - x
        outputs[0][0] = np.sum(d * d, axis=1, dtype=np.float64).astype(np.float32)

    def pullback(self, inputs, outputs, output_grads):
        return [pt.zeros_like(v) for v in inputs]

    @compat.infer_shape
    def infer_shape(self, node, shapes):
        return [(shapes[1][0],)]

    def c_code(self, node, name, inputs, outputs, sub):
        u, a, b, x = inputs
        (z,) = outputs

        def square(element):
            return (f"const float d = (({element('u')} < untapped_sigmoidf({element('a')} + {element('b')}))"
                    f" ? 1.0f : 0.0f) - {element('x')};\n                    acc += d * d;")

        contiguous = lambda v: "b_p[j]" if v == "b" else f"{v}r[j]"  # noqa: E731
        strided = lambda v: "b_p[j * b_s1]" if v == "b" else f"{v}r[j * {v}_s1]"  # noqa: E731
        return ("{" + self._matrices(sub, (u, "u"), (a, "a"), (x, "x")) + self._bias(b, sub)
                + self._output(z, 1, ["n_rows"], sub) + f"""
        #pragma omp parallel for schedule(static)
        for (npy_intp i = 0; i < n_rows; ++i) {{
            const float* ur = u_p + i * u_s0;
            const float* ar = a_p + i * a_s0;
            const float* xr = x_p + i * x_s0;
            double acc = 0.0;
            if ({contiguous_rows("u", "a", "b", "x")}) {{
                #pragma omp simd reduction(+:acc)
                for (npy_intp j = 0; j < n_cols; ++j) {{
                    {square(contiguous)}
                }}
            }} else {{
                for (npy_intp j = 0; j < n_cols; ++j) {{
                    {square(strided)}
                }}
            }}
            z_p[i] = (float)acc;
        }}
        }}""")


bernoulli_sample_squared_distance_rows = BernoulliSampleSquaredDistanceRows()


class _BernoulliLogLik(RowOp):
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
        second reads the row from cache (for a binary row, with the means
        the first left in the gradient's row). ``g_b``, the column sums of ``g_a``,
        is added up row by row in :class:`MatrixSum`'s order.
        """
        code = "{" + self._matrices(sub, (x, "x"), (a, "a")) + self._bias(b, sub) + self._c_bounds()
        if value:
            code += self._output(value, 1, ["n_rows"], sub, "value_p")
        if gradient:
            code += self._row_weights(g, sub) + self._output(gradient[0], 2, ["n_rows", "n_cols"], sub)
            code += self._output(gradient[1], 1, ["n_cols"], sub, "z_b_p") + column_sums_begin(sub)
        else:
            code += "\n        #pragma omp parallel for schedule(static)"

        def loops(binary, element, simd):
            suffix = "_binary" if binary else ""
            xj, aj = element("x"), f"{element('a')} + {element('b')}"
            pragma = "#pragma omp simd" if simd else ""
            body = ""
            if value and gradient and binary:
                # The value's loop leaves each mean p = sigmoid(a + b) in the
                # gradient's row, where the gradient's loop reads it back: one
                # exp and one division an element fewer, the same p.
                return f"""
                    {pragma} reduction(+:row_value)
                    for (npy_intp j = 0; j < n_cols; ++j) {{
                        const float p = untapped_sigmoidf({aj});
                        zr[j] = p;
                        row_value += untapped_bern_ll_binary_p({xj}, p, lo, hi);
                    }}
                    {pragma}
                    for (npy_intp j = 0; j < n_cols; ++j)
                        zr[j] = untapped_bern_ll_grad_binary_p({xj}, zr[j], gi, lo, hi);"""
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
                if ({contiguous_rows("x", "a", "b")}) {{
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
        return code + (column_sums_end("z_b_p") if gradient else "") + "\n        }"


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

    @compat.infer_shape
    def infer_shape(self, node, shapes):
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

    @compat.infer_shape
    def infer_shape(self, node, shapes):
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
    :func:`untapped.fast.rewrites.fuse_bernoulli_value_and_gradient` computes the
    gradient in the forward pass: ``x`` and ``a`` are read from memory once
    instead of twice (the gradient's loop over a row finds it in cache).
    """

    def make_node(self, x, a, g, b=None):
        value = BernoulliLogLikRows(self.eps).make_node(x, a, b)
        gradient = BernoulliLogLikRowsGrad(self.eps).make_node(x, a, g, b)
        return Apply(self, gradient.inputs, [out.type() for out in value.outputs + gradient.outputs])

    @compat.infer_shape
    def infer_shape(self, node, shapes):
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
    a = sigmoid_input(p)
    if a is None:
        return None
    x = pt.as_tensor_variable(x)
    if x.ndim != 2 or a.ndim != 2 or x.type.dtype != "float32" or a.type.dtype != "float32":
        return None
    return BernoulliLogLikRows(eps)(x, *split_bias(a))
