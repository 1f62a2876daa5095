"""The epoch loop (untapped.training): batching, shuffles, lr schedule, history, NaN guard.

Schedule tests run on a stand-in model that records what the loop feeds it
(no compilation); the rest use one small compiled model on a 200-row subset.
"""

import hashlib
import math
from collections import OrderedDict

import numpy as np
import pytest

from untapped import checkpoint, experiment, training

MNIST_SIZES = {"labeled": 35735, "unlabeled": 20000, "unfeatured": 10}


def original_slice(shuffled, index, bs):
    """The original's wrap-around batch (S2S_DGM.py:1454-1478), literally."""
    n = len(shuffled)
    start = (index * bs) % n
    end = min(start + bs, n)
    q, r = divmod(bs - (end - start), n)
    parts = [shuffled[start:end]]
    if q:  # theano.ifelse: Theano could not tile 0 times
        parts.append(np.tile(shuffled, (q,) + (1,) * (shuffled.ndim - 1)))
    parts.append(shuffled[0:r])
    return np.concatenate(parts)


@pytest.mark.parametrize(
    "n, bs",
    [(35735, 10000), (20000, 10000), (10, 10000), (10, 7), (7, 3), (3, 7), (1, 5), (100, 100), (99, 100), (101, 100)],
)
def test_batch_index_is_the_original_wraparound_slice(n, bs):
    rng = np.random.default_rng(n * 1000 + bs)
    perm = rng.permutation(n)
    rows = rng.normal(size=(n, 3))
    shuffled = rows[perm]
    for step in range(training.steps_per_epoch([n], bs) + 3):
        index = training.batch_index(perm, step, bs)
        assert index.shape == (bs,)
        np.testing.assert_array_equal(rows[index], original_slice(shuffled, step, bs))


def test_four_steps_per_epoch_for_mnist_and_the_original_batches():
    assert training.steps_per_epoch(MNIST_SIZES, 10000) == 4
    identity = {s: np.arange(n) for s, n in MNIST_SIZES.items()}
    labeled = [training.batch_index(identity["labeled"], i, 10000) for i in range(4)]
    assert [(b[0], b[-1]) for b in labeled[:3]] == [(0, 9999), (10000, 19999), (20000, 29999)]
    np.testing.assert_array_equal(labeled[3], np.r_[30000:35735, 0:4265])
    unlabeled = [training.batch_index(identity["unlabeled"], i, 10000) for i in range(4)]
    for i, b in enumerate(unlabeled):
        np.testing.assert_array_equal(b, np.arange(10000) + 10000 * (i % 2))
    for i in range(4):
        b = training.batch_index(identity["unfeatured"], i, 10000)
        np.testing.assert_array_equal(b, np.tile(np.arange(10), 1000))


def test_steps_per_epoch_rejects_empty_sources_and_bad_batch():
    assert training.steps_per_epoch([5, 1], 2) == 3
    with pytest.raises(ValueError):
        training.steps_per_epoch([5, 0], 2)
    with pytest.raises(ValueError):
        training.steps_per_epoch([5], 0)


def test_learning_rate_schedule():
    from untapped.model import SSDGM

    params = SSDGM().get_params()
    original = dict(learning_rate=0.01, anneal_lr_factor=0.9995, anneal_lr_epoch=500)  # S2S_DGM.py:1609-1611
    assert {k: params[k] for k in original} == original

    def lr(epoch, base=0.01, factor=0.9995, anneal_epoch=500):
        return training.learning_rate(epoch, base, factor, anneal_epoch)

    assert [lr(e) for e in (1, 2, 499, 500)] == [0.01] * 4
    assert lr(501) == 0.01 * 0.9995
    assert lr(502) == 0.01 * 0.9995 * 0.9995
    assert math.isclose(lr(1000), 0.01 * 0.9995**500, rel_tol=1e-12)
    assert math.isclose(lr(1000), 0.0077875, rel_tol=1e-4)  # the original's S2S_DGM.py:1609-1611
    assert lr(3, base=1.0, factor=0.5, anneal_epoch=1) == 0.25


# ---------------------------------------------------------------- the loop on a stand-in model


class RecordingModel:
    """Just enough of SSDGM for training.fit and checkpoints, recording every step."""

    def __init__(self, **params):
        self.params = dict(
            epochs=3, batch_size=4, eval_every=2, seed=7, learning_rate=0.01, anneal_lr_factor=0.5,
            anneal_lr_epoch=1, mode="c",
        )
        self.params.update(params)
        self.__dict__.update(self.params)
        self.w = np.zeros(3, dtype=np.float32)
        self.adam = OrderedDict([("adam/t", np.float32(0)), ("adam/m/w", np.zeros(3, np.float32))])
        self.steps = []
        self.evaluations = []

        class Graph:
            def function(self, name):
                return None

        self.graph = Graph()

    def get_params(self):
        return dict(self.params)

    def param_values_by_name(self):
        return OrderedDict(w=self.w.copy())

    def set_param_values_by_name(self, values):
        self.w = np.array(values["w"])

    def optimizer_state(self):
        return OrderedDict((k, np.array(v)) for k, v in self.adam.items())

    def set_optimizer_state(self, state):
        self.adam = OrderedDict((k, np.array(state[k])) for k in self.adam)

    def rng_states(self):
        return OrderedDict()

    def set_rng_states(self, states):
        pass

    def set_training_data(self, **arrays):
        self.data = arrays

    def train_step(self, labeled, unlabeled, unfeatured, lr):
        d = self.data
        self.steps.append(
            dict(
                lr=lr,
                labeled=(d["labeled_x"][labeled], d["labeled_y"][labeled]),
                unlabeled=d["unlabeled_x"][unlabeled],
                unfeatured=(d["unfeatured_y"][unfeatured], d["unfeatured_z"][unfeatured]),
            )
        )
        self.adam["adam/t"] = self.adam["adam/t"] + 1
        return OrderedDict(labeled_elbo=float(len(self.steps)), total=1.0)

    def evaluate(self, **arrays):
        self.evaluations.append(arrays)
        return OrderedDict((t, 0.5) for t in list(training.TERMS) + ["total"])


class TinySplit:
    """Rows that carry their own ids, so pairing can be checked after batching."""

    def __init__(self, labeled=10, unlabeled=6, unfeatured=3, evaluation=5):
        ids = np.arange(labeled, dtype=np.float32)
        self.labeled_x = np.repeat(ids[:, None], 4, axis=1)
        self.labeled_y = np.repeat(ids[:, None], 2, axis=1) + 1000
        self.unlabeled_x = np.repeat(np.arange(unlabeled, dtype=np.float32)[:, None], 4, axis=1)
        ids = np.arange(unfeatured, dtype=np.float32)
        self.unfeatured_y = np.repeat(ids[:, None], 2, axis=1)
        self.unfeatured_z = np.repeat(ids[:, None], 2, axis=1) + 500
        self.eval_x = np.zeros((evaluation, 4), np.float32)
        self.eval_y = np.zeros((evaluation, 2), np.float32)
        self.eval_unlabeled_x = self.unlabeled_x
        self.eval_unfeatured_y = self.unfeatured_y
        self.eval_unfeatured_z = self.unfeatured_z + 1


def test_loop_keeps_pairs_together_shuffles_every_epoch_and_anneals():
    model = RecordingModel(epochs=3)
    split = TinySplit()
    training.fit(model, split)
    per_epoch = training.steps_per_epoch([10, 6, 3], 4)  # 3
    assert len(model.steps) == 3 * per_epoch
    orders = []
    for epoch in range(3):
        steps = model.steps[epoch * per_epoch:(epoch + 1) * per_epoch]
        assert {s["lr"] for s in steps} == {0.01 * 0.5**epoch}  # anneal from epoch 1 (after it)
        xs = np.concatenate([s["labeled"][0][:, 0] for s in steps])
        ys = np.concatenate([s["labeled"][1][:, 0] for s in steps])
        np.testing.assert_array_equal(ys, xs + 1000)  # (x, y) rows stay paired
        assert sorted(xs[:10]) == list(range(10))  # one pass over a permutation, then wrap-around
        orders.append(tuple(xs[:10]))
        for s in steps:
            y, z = s["unfeatured"]
            np.testing.assert_array_equal(z[:, 0], y[:, 0] + 500)  # (y, z) rows stay paired
            assert s["unlabeled"].shape == (4, 4) and y.shape == (4, 2)
    assert len(set(orders)) == 3  # a new shuffle each epoch
    assert model.epoch_ == 3
    assert model.history_["epoch"] == [1.0, 2.0, 3.0]
    assert model.history_["eval/epoch"] == [2.0, 3.0]  # every eval_every, and after the last
    assert model.history_["train/labeled_elbo"] == [2.0, 5.0, 8.0]  # means of per-step values
    # Evaluation sees the evaluation sources (second z draw) in full batches.
    arrays = model.evaluations[0]
    assert arrays["labeled_x"].shape == (4, 4)
    np.testing.assert_array_equal(arrays["unfeatured_z"][:, 0], arrays["unfeatured_y"][:, 0] + 501)


def test_loop_is_reproducible_from_the_seed():
    a, b, c = RecordingModel(), RecordingModel(), RecordingModel(seed=8)
    for m in (a, b, c):
        training.fit(m, TinySplit())
    order = lambda m: np.concatenate([s["labeled"][0][:, 0] for s in m.steps])  # noqa: E731
    np.testing.assert_array_equal(order(a), order(b))
    assert not np.array_equal(order(a), order(c))


def test_fit_rejects_bad_settings():
    with pytest.raises(ValueError, match="eval_every"):
        training.fit(RecordingModel(), TinySplit(), eval_every=0)
    with pytest.raises(ValueError, match="batch_size"):
        training.fit(RecordingModel(batch_size=0), TinySplit())
    with pytest.raises(TypeError, match="batch_size"):  # the model's hyperparameter alone, never a fit keyword
        training.fit(RecordingModel(), TinySplit(), batch_size=4)


def test_ctrl_c_saves_the_last_completed_epoch(tmp_path, monkeypatch):
    model = RecordingModel(epochs=5)
    real = model.train_step

    def interrupted(*args):
        if len(model.steps) == 7:  # during epoch 3 (3 steps an epoch)
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(model, "train_step", interrupted)
    path = tmp_path / "ckpt.h5"
    with pytest.raises(training.TrainingInterrupted, match="epoch 3") as info:
        training.fit(model, TinySplit(), checkpoint_path=path, checkpoint_every=10)
    assert info.value.epoch == 2 and info.value.checkpoint_path == path
    saved = checkpoint.load(path)
    assert saved.epoch == 2  # not saved at epoch 1 or 2 (every 10), saved on Ctrl-C
    assert saved.history["epoch"] == [1.0, 2.0]
    assert float(saved.optimizer["adam/t"]) == 6  # the state at the end of epoch 2, not mid-epoch 3


# ---------------------------------------------------------------- a real, small model


@pytest.fixture(scope="module")
def split(mnist_dir):
    return experiment.load_split(str(mnist_dir), seed=1234, subset=200)


@pytest.fixture(scope="module")
def trained(split):
    """A small compiled model, and its state before any training (restored by each test)."""
    from untapped.model import SSDGM

    model = SSDGM(classifier_hidden=(16,), encoder_hidden=(8,), decoder_hidden=(32,), batch_size=64, eval_every=2)
    initial = checkpoint.Checkpoint.from_model(model, epoch=0)
    return model, initial


def _fresh(trained):
    model, initial = trained
    initial.restore(model)
    return model


def test_fit_records_history_of_every_term(trained, split):
    model = _fresh(trained)
    before = model.get_param_values()
    assert model.fit(split, epochs=3) is model
    h = model.history_
    assert h["epoch"] == [1.0, 2.0, 3.0] and len(h["learning_rate"]) == 3 and len(h["seconds"]) == 3
    for term in list(training.TERMS) + ["total"]:
        assert len(h[f"train/{term}"]) == 3  # the untapped preset trains all five
        assert len(h[f"eval/{term}"]) == 2  # epochs 2 and 3
        assert all(np.isfinite(h[f"eval/{term}"]))
    assert h["eval/epoch"] == [2.0, 3.0]
    assert set(model.compile_seconds_) == {"train", "evaluate"}
    after = model.get_param_values()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))
    assert float(model.optimizer_state()["adam/t"]) == 3 * training.steps_per_epoch([200, 200, 10], 64)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(trained, split, tmp_path, monkeypatch):
    model = _fresh(trained)
    real = model.train_step
    steps = training.steps_per_epoch([200, 200, 10], 64)
    calls = []

    def poisoned(*args):
        calls.append(1)
        if len(calls) == steps + 2:  # epoch 2, step 2
            values = model.param_values_by_name()
            values["classifier/hidden1/W"][0, 0] = np.nan
            model.set_param_values_by_name(values)
        return real(*args)

    monkeypatch.setattr(model, "train_step", poisoned)
    path = tmp_path / "run.h5"
    with pytest.raises(training.TrainingDiverged) as info:
        model.fit(split, epochs=4, checkpoint_path=path)
    message = str(info.value)
    assert "\n" not in message
    assert "epoch 2, step 2" in message and "nan" in message and str(path) in message and "(epoch 1)" in message
    assert info.value.epoch == 1
    good = checkpoint.load(path)
    assert good.epoch == 1
    assert all(np.isfinite(v).all() for v in good.params.values())
    assert model.history_["epoch"] == [1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]  # no temporary files left


def test_non_finite_parameter_after_an_epoch_is_caught(trained, split, tmp_path, monkeypatch):
    model = _fresh(trained)
    real = model.train_step
    steps = training.steps_per_epoch([200, 200, 10], 64)
    calls = []

    def poison_after(*args):
        values = real(*args)
        calls.append(1)
        if len(calls) == steps:  # the last step of epoch 1: its outputs were finite
            params = model.param_values_by_name()
            params["decoder/mean/b"][:] = np.inf
            model.set_param_values_by_name(params)
        return values

    monkeypatch.setattr(model, "train_step", poison_after)
    path = tmp_path / "run.h5"
    with pytest.raises(training.TrainingDiverged, match="epoch 1: non-finite parameter"):
        model.fit(split, epochs=2, checkpoint_path=path)
    assert not path.exists()  # nothing good to keep: no checkpoint written


def _assert_same_run(actual, expected):
    """Two checkpoints hold the same run: parameters, Adam, every generator and the history (timings aside), bit
    for bit."""
    assert actual.epoch == expected.epoch
    for group in ("params", "optimizer"):
        ours, theirs = getattr(actual, group), getattr(expected, group)
        assert list(ours) == list(theirs)
        for name, value in theirs.items():
            assert np.array_equal(ours[name], value), f"{group} {name}"
    assert actual.rng == expected.rng
    assert set(actual.history) == set(expected.history)
    for key, values in expected.history.items():
        if key != "seconds":
            assert actual.history[key] == values, key


@pytest.mark.parametrize("first, total", [(1, 2), (1, 3), (3, 4)])
def test_a_resumed_run_equals_an_uninterrupted_one(trained, split, tmp_path, first, total):
    """eval_every is 2: the evaluation after a run's last epoch, off the schedule, must not shift the resumed
    schedule."""
    from untapped.model import SSDGM

    model = _fresh(trained)
    straight_path = tmp_path / "straight.h5"
    model.fit(split, epochs=total, checkpoint_path=straight_path)
    straight = checkpoint.load(straight_path)

    model = _fresh(trained)
    path = tmp_path / "resumed.h5"
    model.fit(split, epochs=first, checkpoint_path=path)
    assert model.history_["eval/epoch"][-1] == first  # the run's own final evaluation is kept
    fresh = SSDGM(**model.get_params())
    fresh.fit(split, epochs=total, resume=path, checkpoint_path=path)
    _assert_same_run(checkpoint.load(path), straight)
    assert fresh.history_["eval/epoch"] == straight.history["eval/epoch"]
    for key in straight.history:
        if key.startswith("eval/"):
            assert fresh.history_[key] == straight.history[key], key


def test_no_epochs_writes_the_initial_state(trained, split, tmp_path):
    model = _fresh(trained)
    initial = model.param_values_by_name()
    path = tmp_path / "zero.h5"
    model.fit(split, epochs=0, checkpoint_path=path)
    zero = checkpoint.load(path)
    assert zero.epoch == 0 and zero.history == {}
    for name, value in initial.items():
        assert np.array_equal(zero.params[name], value), name
    assert all(not np.any(v) for v in zero.optimizer.values())  # Adam starts from zero

    model = _fresh(trained)
    straight_path = tmp_path / "one.h5"
    model.fit(split, epochs=1, checkpoint_path=straight_path)
    model = _fresh(trained)
    model.fit(split, epochs=1, resume=path, checkpoint_path=path)
    _assert_same_run(checkpoint.load(path), checkpoint.load(straight_path))


def test_evaluations_leave_the_training_trajectory_alone(trained, split, tmp_path):
    """Evaluating every epoch, which first frees the training step's kept buffers, trains the same bits as
    evaluating once."""
    model = _fresh(trained)
    model.fit(split, epochs=3, eval_every=1, checkpoint_path=tmp_path / "every.h5")
    assert model.history_["eval/epoch"] == [1.0, 2.0, 3.0]
    step = model.graph.function("train")
    kept = [value[0] for key, value in step.vm.storage_map.items() if key.owner is not None]
    assert kept and all(v is None for v in kept)  # freed before the last evaluation
    every = checkpoint.load(tmp_path / "every.h5")

    model = _fresh(trained)
    model.fit(split, epochs=3, eval_every=10, checkpoint_path=tmp_path / "once.h5")
    once = checkpoint.load(tmp_path / "once.h5")
    for group in ("params", "optimizer"):
        for name, value in getattr(once, group).items():
            assert np.array_equal(getattr(every, group)[name], value), f"{group} {name}"
    for key, values in once.history.items():
        if key.startswith("train/"):
            assert every.history[key] == values, key
