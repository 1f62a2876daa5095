"""``ConcatDenseLayer``: Lasagne's dense layer on a concatenation; with the fast kernels, without forming the
concatenation."""

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.basic import Join

from parmesan_compat.backend import lasagne_rng, load_lasagne
from untapped.backend import compile_mode, float32
from untapped.fast import tanh as fast_tanh
from untapped.fast.kernels import FAST
from untapped.paper.kernels import PLAIN
from untapped.paper.layers import ConcatDenseLayer
from untapped.paper.networks import Networks

lasagne = load_lasagne()
L = lasagne.layers


def _layers(seed):
    """(ours, Lasagne's) on inputs of widths 7 and 3, each built from ``RandomState(seed)``."""
    a, b = L.InputLayer((None, 7)), L.InputLayer((None, 3))
    built = []
    for make in (
        lambda: ConcatDenseLayer(
            [a, b], 4, W=lasagne.init.GlorotUniform(np.sqrt(2)), nonlinearity=fast_tanh.tanh, kernels=FAST,
            name="enc/h1",
        ),
        lambda: L.DenseLayer(
            L.ConcatLayer([a, b]), 4, W=lasagne.init.GlorotUniform(np.sqrt(2)), nonlinearity=fast_tanh.tanh,
            name="enc/h1",
        ),
    ):
        with lasagne_rng(np.random.RandomState(seed)):
            built.append(make())
    return (a, b), built


def test_parameters_and_initial_values_are_the_dense_layers():
    _, (ours, theirs) = _layers(seed=3)
    assert (
        [p.name for p in L.get_all_params(ours)]
        == [p.name for p in L.get_all_params(theirs)]
        == ["enc/h1.W", "enc/h1.b"]
    )
    for p, q in zip(L.get_all_params(ours), L.get_all_params(theirs)):
        assert p.get_value().shape == q.get_value().shape
        assert np.array_equal(p.get_value(), q.get_value())
    assert ours.output_shape == theirs.output_shape == (None, 4)


def test_output_and_gradients_are_the_dense_layer_on_the_concatenation_without_a_join():
    rng = np.random.default_rng(4)
    (a, b), (ours, _) = _layers(seed=5)
    ours.b.set_value(rng.standard_normal(4).astype(np.float32))
    xv = (rng.random((6, 7)) < 0.5).astype(np.float32)
    yv = rng.random((6, 3)).astype(np.float32)
    gv = rng.standard_normal((6, 4)).astype(np.float32)
    with float32():
        x, y = pt.matrix("x"), pt.matrix("y")
        out = L.get_output(ours, {a: x, b: y})
        grads = pytensor.grad(pt.sum(out * gv), [ours.W, ours.b, x, y])
        f = pytensor.function([x, y], [out, *grads], mode=compile_mode("c"))
    assert not [n for n in f.maker.fgraph.apply_nodes if isinstance(n.op, Join)]
    out_v, gW, gb, gx, gy = f(xv, yv)
    W, bias = ours.W.get_value().astype(np.float64), ours.b.get_value().astype(np.float64)
    xy = np.concatenate([xv, yv], axis=1).astype(np.float64)
    t = np.tanh(xy @ W + bias)
    np.testing.assert_allclose(out_v, t, rtol=1e-5, atol=1e-6)
    d = gv * (1 - t**2)
    np.testing.assert_allclose(gW, xy.T @ d, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, d.sum(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([gx, gy], axis=1), d @ W.T, rtol=1e-4, atol=1e-5)


def _joins(var):
    return [v for v in pytensor.graph.traversal.ancestors([var]) if v.owner and isinstance(v.owner.op, Join)]


def test_the_fast_encoder_sums_products_and_the_decoder_concatenates():
    with float32():
        nets = Networks(
            n_features=12, n_classes=4, classifier_hidden=(5,), encoder_hidden=(3,), decoder_hidden=(6,), seed=2,
            kernels=FAST,
        )
        x, y, z = pt.matrix("x"), pt.matrix("y"), pt.matrix("z")
        enc = nets.encoder(x, y, pt.matrix("eps"))
        dec = nets.decoder(y, z)
    assert not _joins(enc.z)
    assert _joins(dec.mean)
    shapes = {p.name: p.get_value().shape for p in nets.params}
    assert shapes["encoder/hidden1/W"] == (16, 3) and shapes["decoder/hidden1/W"] == (6, 6)


def test_plain_and_fast_networks_have_the_same_weights_and_outputs():
    rng = np.random.default_rng(8)
    xv = (rng.random((5, 12)) < 0.4).astype(np.float32)
    yv = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 5)]
    eps = rng.standard_normal((5, 2)).astype(np.float32)
    outputs = {}
    for kernels in (PLAIN, FAST):
        with float32():
            nets = Networks(
                n_features=12, n_classes=4, classifier_hidden=(5,), encoder_hidden=(3,), decoder_hidden=(6,), seed=2,
                kernels=kernels,
            )
            x, y, e = pt.matrix("x"), pt.matrix("y"), pt.matrix("eps")
            enc = nets.encoder(x, y, e)
            dec = nets.decoder(y, enc.z)
            f = pytensor.function([x, y, e], [nets.classifier(x).logits, enc.z, dec.mean], mode=compile_mode("c"))
        outputs[kernels.name] = ([p.get_value() for p in nets.params], f(xv, yv, eps))
    for p, q in zip(outputs["plain"][0], outputs["fast"][0]):
        assert np.array_equal(p, q)
    for p, q in zip(outputs["plain"][1], outputs["fast"][1]):
        np.testing.assert_allclose(q, p, rtol=1e-5, atol=1e-6)
