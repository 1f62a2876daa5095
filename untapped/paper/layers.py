"""The networks' dense layers: Lasagne's, with their output computed by the graph's kernels.

- :class:`DenseLayer`: Lasagne's ``DenseLayer``, ``nonlinearity(x W + b)``.
- :class:`ConcatDenseLayer`: Lasagne's ``DenseLayer`` on a ``ConcatLayer``,
  ``nonlinearity(concat[x_1, ..., x_k] W + b)``: the encoder's first layer,
  which reads x and y.
- :func:`dense_stack`: a network's tanh hidden layers.

Each has Lasagne's parameters and initial values, so the original's seed
gives the original's weights; the output is ``kernels.dense``
(:mod:`untapped.paper.kernels`): the formula as written, or a fused kernel
with the same values.
"""

import numpy as np

from parmesan_compat.backend import load_lasagne
from untapped.paper.kernels import PLAIN

lasagne = load_lasagne()
L = lasagne.layers


class DenseLayer(L.DenseLayer):
    """Lasagne's ``DenseLayer`` (same parameters, initialisation and output), computed by ``kernels.dense``.

    Input: a (rows, n_in) matrix; output: ``nonlinearity(x W + b)``, (rows, num_units),
    with ``W`` (n_in, num_units) and ``b`` (num_units,).
    """

    def __init__(self, incoming, num_units, kernels=PLAIN, **kwargs):
        """A dense layer whose output ``kernels.dense`` computes.

        Parameters
        ----------
        incoming : Layer or tuple
            The layer feeding this one (output (rows, n_in)), or its shape.
        num_units : int
            The number of units.
        kernels : PlainKernels or FastKernels, optional
            Computes the output (:mod:`untapped.paper.kernels`); default ``PLAIN``.
        **kwargs
            ``W``, ``b``, ``nonlinearity``, ``name``: as for :class:`lasagne.layers.DenseLayer`.
        """
        super().__init__(incoming, num_units, **kwargs)
        self.kernels = kernels

    def get_output_for(self, input, **kwargs):
        """The layer's output expression.

        Parameters
        ----------
        input : TensorVariable, (rows, n_in)
            The incoming layer's output.
        **kwargs
            Ignored (``get_output``'s flags, such as ``deterministic``).

        Returns
        -------
        TensorVariable, (rows, num_units)
            ``nonlinearity(input W + b)``.
        """
        return self.kernels.dense([input], [self.input_shape[1]], self.W, self.b, self.nonlinearity)


class ConcatDenseLayer(L.MergeLayer):
    """``DenseLayer(ConcatLayer(incomings))``: the same parameters, initialisation and output.

    Inputs: matrices (rows, n_i); output: ``nonlinearity(concat[x_1, ..., x_k] W + b)``,
    (rows, num_units), computed by ``kernels.dense``, with ``W`` (sum_i n_i, num_units)
    and ``b`` (num_units,).

    Attributes
    ----------
    widths : list of int
        Each incoming layer's number of columns, n_1, ..., n_k.
    W : TensorSharedVariable, (sum(widths), num_units)
        The weights; rows ``n_1 + ... + n_(i-1)`` to ``n_1 + ... + n_i - 1`` face input ``i``.
    b : TensorSharedVariable, (num_units,), or None
        The biases.
    """

    def __init__(
        self,
        incomings,
        num_units,
        W=lasagne.init.GlorotUniform(),
        b=lasagne.init.Constant(0.0),
        nonlinearity=None,
        kernels=PLAIN,
        **kwargs,
    ):
        """A dense layer over the concatenation of ``incomings``.

        Parameters
        ----------
        incomings : list of Layer
            The layers whose outputs, matrices (rows, n_i), are concatenated.
        num_units : int
            The number of units.
        W : initializer, optional
            For the weights, (sum_i n_i, num_units); default ``GlorotUniform()``.
        b : initializer or None, optional
            For the biases, (num_units,); default zeros; ``None``: no biases.
        nonlinearity : callable or None, optional
            Applied to the activation; ``None`` (the default): identity.
        kernels : PlainKernels or FastKernels, optional
            Computes the output (:mod:`untapped.paper.kernels`); default ``PLAIN``.
        **kwargs
            ``name``: as for any Lasagne layer.
        """
        super().__init__(incomings, **kwargs)
        self.nonlinearity = lasagne.nonlinearities.identity if nonlinearity is None else nonlinearity
        self.num_units = num_units
        self.kernels = kernels
        self.widths = [int(np.prod(shape[1:])) for shape in self.input_shapes]
        self.W = self.add_param(W, (sum(self.widths), num_units), name="W")
        self.b = None if b is None else self.add_param(b, (num_units,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shapes):
        """The output shape.

        Parameters
        ----------
        input_shapes : list of tuple
            The incoming shapes, (rows, n_i) each.

        Returns
        -------
        tuple
            ``(rows, num_units)``.
        """
        return (input_shapes[0][0], self.num_units)

    def get_output_for(self, inputs, **kwargs):
        """The layer's output expression.

        Parameters
        ----------
        inputs : list of TensorVariable, each (rows, n_i)
            The incoming layers' outputs.
        **kwargs
            Ignored (``get_output``'s flags, such as ``deterministic``).

        Returns
        -------
        TensorVariable, (rows, num_units)
            ``nonlinearity(concat[x_1, ..., x_k] W + b)``.

        Raises
        ------
        ValueError
            If an input is not a matrix.
        """
        if any(x.ndim != 2 for x in inputs):
            raise ValueError(f"{self.name}: ConcatDenseLayer takes matrices")
        return self.kernels.dense(inputs, self.widths, self.W, self.b, self.nonlinearity)


def dense_stack(incoming, units, gain, prefix, kernels):
    """tanh dense layers named ``<prefix>/hidden1``, ``<prefix>/hidden2``, ...

    ``incoming`` is a layer, or a list of layers that the first layer takes
    concatenated (:class:`ConcatDenseLayer`).
    """
    layer = incoming
    for i, n in enumerate(units, start=1):
        cls = ConcatDenseLayer if isinstance(layer, list) else DenseLayer
        layer = cls(
            layer,
            n,
            W=lasagne.init.GlorotUniform(gain),
            nonlinearity=kernels.tanh,
            kernels=kernels,
            name=f"{prefix}/hidden{i}",
        )
    return layer
