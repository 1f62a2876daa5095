"""The C mode's kernel ``unfeatured_pass``: the paper's reverse pass, values and gradients, with the decoder run
once a pair."""

import numpy as np
import pytensor
import pytensor.tensor as pt

from untapped.backend import compile_mode, float32
from untapped.fast import distinct
from untapped.fast import matmul as fast_matmul
from untapped.fast import rows as fast_rows
from untapped.fast.kernels import FAST
from untapped.paper import terms
from untapped.paper.kernels import PLAIN
from untapped.paper.networks import Networks


def _pass_and_gradients(nets, on_distinct_pairs):
    """Compiled (y_distinct, z_distinct, rows, uniform) -> the pass's outputs, the reverse bound and its decoder
    gradients."""
    y_d, z_d, rows, u = (
        pt.matrix("y_distinct"), pt.matrix("z_distinct"), pt.vector("rows", dtype="int64"), pt.matrix("u")
    )
    y, z = y_d[rows], z_d[rows]
    noise = {"unfeatured/bernoulli_uniform": u}
    # The kernel of the C mode against its plain twin, the paper's pass on every row.
    kernels = FAST if on_distinct_pairs else PLAIN
    out = kernels.unfeatured_pass(nets, y, z, noise, (y_d, z_d, rows))
    bound = terms.reverse_elbo(y, out, kernels=FAST)
    decoder_params = nets.params_by_net["decoder"]
    grads = pytensor.grad(bound, decoder_params)
    names = [name for name, _ in out.items()] + ["bound"] + [p.name for p in decoder_params]
    values = [v for _, v in out.items()]
    f = pytensor.function([y_d, z_d, rows, u], values + [bound, *grads], mode=compile_mode("c"))
    return names, f


def _networks(**sizes):
    return Networks(n_features=30, n_classes=4, seed=5, kernels=FAST, **{"decoder_hidden": (16, 24), **sizes})


def test_the_pass_on_distinct_pairs_equals_the_paper_pass():
    rng = np.random.default_rng(3)
    with float32():
        nets = _networks(classifier_hidden=(8, 8), encoder_hidden=(6, 6))
        names, plain = _pass_and_gradients(nets, on_distinct_pairs=False)
        _, deduplicated = _pass_and_gradients(nets, on_distinct_pairs=True)
    y_d = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]]
    z_d = rng.uniform(-1.5, 1.5, (5, 2)).astype(np.float32)
    rows = rng.integers(0, 5, 200)
    u = rng.random((200, 30), dtype=np.float32)
    expected = plain(y_d, z_d, rows, u)
    got = deduplicated(y_d, z_d, rows, u)
    assert names[:4] == ["logits", "y_probs", "x_mean", "x_sample"]
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
        nets = _networks()
        y_d, z_d, rows = pt.matrix("y_d"), pt.matrix("z_d"), pt.vector("rows", dtype="int64")
        mean = distinct.gather_mean_rows(nets.decoder(y_d, z_d).mean, rows)
    (gather,) = [
        v.owner
        for v in pytensor.graph.traversal.ancestors([mean])
        if v.owner and isinstance(v.owner.op, fast_rows.GatherRows)
    ]
    assert mean.owner.inputs[0] is gather.outputs[0]  # sigmoid(gathered pre-activation)
    products = [
        v.owner
        for v in pytensor.graph.traversal.ancestors([gather.inputs[0]])
        if v.owner and isinstance(v.owner.op, fast_matmul.Matmul)
    ]
    assert len(products) == 3
    assert all(rows not in pytensor.graph.traversal.ancestors([p.outputs[0]]) for p in products)
