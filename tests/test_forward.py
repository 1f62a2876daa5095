"""The unfeatured pass on distinct (y, z) pairs: the values and gradients of the plain pass, with the decoder run once a pair."""

import numpy as np
import pytensor
import pytensor.tensor as pt

from untapped import forward, objectives, ops
from untapped.backend import compile_mode, float32
from untapped.networks import Networks


def _pass_and_gradients(nets, distinct):
    """Compiled (y_distinct, z_distinct, rows, uniform) -> the pass's outputs, the reverse bound and its decoder gradients."""
    y_d, z_d, rows, u = pt.matrix("y_distinct"), pt.matrix("z_distinct"), pt.vector("rows", dtype="int64"), pt.matrix("u")
    y, z = y_d[rows], z_d[rows]
    noise = {"unfeatured/bernoulli_uniform": u}
    out = forward.unfeatured_pass(nets, y, z, noise, distinct=(y_d, z_d, rows) if distinct else None)
    bound = objectives.reverse_elbo(y, out["logits"], out["x_sample"], out["x_mean"])
    decoder_params = nets.params_by_net["decoder"]
    grads = pytensor.grad(bound, decoder_params)
    names = list(out) + ["bound"] + [p.name for p in decoder_params]
    f = pytensor.function([y_d, z_d, rows, u], list(out.values()) + [bound, *grads], mode=compile_mode("c"))
    return names, f


def test_the_pass_on_distinct_pairs_equals_the_plain_pass():
    rng = np.random.default_rng(3)
    with float32():
        nets = Networks(n_features=30, n_classes=4, decoder_hidden=(16, 24), classifier_hidden=(8, 8), encoder_hidden=(6, 6), seed=5)
        names, plain = _pass_and_gradients(nets, distinct=False)
        _, deduplicated = _pass_and_gradients(nets, distinct=True)
    y_d = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]]
    z_d = rng.uniform(-1.5, 1.5, (5, 2)).astype(np.float32)
    rows = rng.integers(0, 5, 200)
    u = rng.random((200, 30), dtype=np.float32)
    expected = plain(y_d, z_d, rows, u)
    got = deduplicated(y_d, z_d, rows, u)
    for name, e, g in zip(names, expected, got):
        assert g.shape == e.shape, name
        if name in ("x_sample",):
            assert np.array_equal(g, e), name
        else:
            # the duplicated rows' gradients are summed in another order: float32 reassociation
            np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-6, err_msg=name)


def test_gather_is_the_only_full_batch_work_of_the_decoder():
    """The decoder's products run on the distinct pairs; only its pre-activation is gathered to the batch."""
    with float32():
        nets = Networks(n_features=30, n_classes=4, decoder_hidden=(16, 24), seed=5)
        y_d, z_d, rows = pt.matrix("y_d"), pt.matrix("z_d"), pt.vector("rows", dtype="int64")
        mean = nets.decoder(y_d, z_d, rows=rows)["mean"]
    (gather,) = [v.owner for v in pytensor.graph.traversal.ancestors([mean]) if v.owner and isinstance(v.owner.op, ops.GatherRows)]
    assert mean.owner.inputs[0] is gather.outputs[0]  # sigmoid(gathered pre-activation)
    products = [v.owner for v in pytensor.graph.traversal.ancestors([gather.inputs[0]]) if v.owner and isinstance(v.owner.op, ops.Matmul)]
    assert len(products) == 3
    assert all(rows not in pytensor.graph.traversal.ancestors([p.outputs[0]]) for p in products)
