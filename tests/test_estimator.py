"""SSDGM as a scikit-learn estimator: fit(X, y) with y = -1 unlabeled, validation, pickling, and sklearn's own
checks."""

import gc
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import check_estimators_data_not_an_array, parametrize_with_checks

from untapped import checkpoint, data, experiment, training
from untapped.model import SSDGM

#: A tiny configuration: sizes from the data, small networks, a few short epochs.
TINY = dict(
    n_features=None, n_classes=None, classifier_hidden=(8,), encoder_hidden=(4,), decoder_hidden=(8,),
    batch_size=32, epochs=10,
)

#: scikit-learn checks a semi-supervised model cannot pass, with the reason.
#: Two more are skipped by scikit-learn itself, for this environment:
#: check_array_api_input (SCIPY_ARRAY_API unset; the model computes in
#: PyTensor, not through the array API) and the pandas part of
#: check_classifier_data_not_an_array (pandas not installed; its array-like
#: part runs, and runs on its own in test_array_likes_that_are_not_arrays).
EXPECTED_FAILED_CHECKS = {
    "check_classifiers_classes": (
        "one of its problems labels the classes -1 and 1; -1 marks unlabeled rows "
        "(the sklearn.semi_supervised convention), so that y has one class and fit refuses it"
    ),
}


def tiny(**params):
    return SSDGM(**{**TINY, **params})


@pytest.mark.slow
@parametrize_with_checks([tiny()], expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
def test_array_likes_that_are_not_arrays():
    """The part of check_classifier_data_not_an_array that scikit-learn runs without pandas."""
    X = np.array([[3, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 1], [0, 3], [1, 0], [2, 0], [4, 4], [2, 3], [3, 2]]) / 4
    y = np.array([1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2])
    check_estimators_data_not_an_array("SSDGM", tiny(), X, y, "NotAnArray")


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(240, centers=3, n_features=5, random_state=0)
    return MinMaxScaler().fit_transform(X).astype(np.float64), y


@pytest.fixture(scope="module")
def fitted(blobs):
    X, y = blobs
    y = np.array(["cat", "dog", "emu"], dtype=object)[y]
    y[::2] = -1  # half the rows unlabeled
    return tiny().fit(X, y)


def _one_line(excinfo, *fragments):
    message = str(excinfo.value)
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- fit(X, y)


def test_semi_supervised_fit_predict_score(fitted, blobs):
    X, y = blobs
    names = np.array(["cat", "dog", "emu"])
    assert list(fitted.classes_) == ["cat", "dog", "emu"] and fitted.n_features_in_ == 5
    proba = fitted.predict_proba(X)
    assert proba.shape == (240, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    predicted = fitted.predict(X)
    assert np.array_equal(predicted, names[proba.argmax(axis=1)])
    assert fitted.score(X, names[y]) == np.mean(predicted == names[y]) > 0.9
    assert fitted.history_["epoch"] == list(map(float, range(1, 11)))
    assert not any(k.startswith("eval/") for k in fitted.history_)  # no held-out set, no evaluation
    # inputs of any numeric dtype are cast to float32
    counts = np.round(X * 4).astype(np.int64)
    assert np.array_equal(fitted.predict_proba(counts), fitted.predict_proba(counts.astype(np.float32)))
    assert np.array_equal(fitted.predict_proba(X), fitted.predict_proba(X.astype(np.float32)))


def test_the_training_sources_and_the_default_unfeatured_set(fitted, blobs):
    X, y = blobs
    graph = fitted.graph
    labeled = graph.data["labeled_x"].get_value()
    assert np.array_equal(labeled, np.float32(X[1::2]))  # rows with a label
    assert np.array_equal(graph.data["unlabeled_x"].get_value(), np.float32(X[::2]))  # rows with y = -1
    assert np.array_equal(graph.data["labeled_y"].get_value(), np.eye(3, dtype=np.float32)[y[1::2]])
    assert np.array_equal(graph.data["unfeatured_y"].get_value(), data.close_corners(3))
    z = np.random.default_rng(fitted.seed).uniform(-1.5, 1.5, size=(3, 2)).astype(np.float32)
    assert np.array_equal(graph.data["unfeatured_z"].get_value(), z)


def test_classes_keyword_for_classes_without_labels(blobs):
    """The paper's task: some classes have no labeled row, only unfeatured ones."""
    X, y = blobs
    labeled_two = np.where(y == 2, -1, y)
    model = tiny(n_classes=3, epochs=1).fit(X, labeled_two, classes=[0, 1, 2])
    assert list(model.classes_) == [0, 1, 2] and model.predict_proba(X).shape == (240, 3)
    with pytest.raises(ValueError) as info:
        tiny(n_classes=3, epochs=1).fit(X, labeled_two)
    _one_line(info, "y has 2 classes", "n_classes=3", "classes=")
    with pytest.raises(ValueError) as info:
        tiny(epochs=1).fit(X, y, classes=[0, 1])
    _one_line(info, "labels not in classes: 2")


def test_unfeatured_keywords(blobs):
    X, y = blobs
    corners = np.eye(3, dtype=np.float32)  # one-hot: the paper's unfeatured labels
    model = tiny(epochs=1, reverse_y_density="categorical").fit(
        X, y, unfeatured_y=corners, unfeatured_z=np.zeros((3, 2))
    )
    assert np.array_equal(model.graph.data["unfeatured_y"].get_value(), corners)
    assert not model.graph.data["unfeatured_z"].get_value().any()
    for keywords, fragment in [
        (dict(unfeatured_y=corners), "Concrete density of the reverse bound is not finite"),
        (dict(unfeatured_z=np.zeros((3, 2))), "unfeatured_z needs its unfeatured_y"),
        (dict(unfeatured_y=np.eye(4)), "unfeatured_y must have shape (rows, 3)"),
        (dict(unfeatured_y=data.close_corners(3), unfeatured_z=np.zeros((2, 2))), "row counts differ"),
        (dict(unfeatured_y=np.where(corners == 1, np.nan, 0.5)), "unfeatured_y contains NaN or infinity"),
    ]:
        with pytest.raises(ValueError) as info:
            tiny(epochs=1).fit(X, y, **keywords)
        _one_line(info, fragment)


def test_fitting_twice_gives_the_same_model_and_a_reused_graph_trains_as_a_new_one(blobs):
    X, y = blobs
    first = tiny(seed=4321)  # a seed no other test uses: its graph is new
    before = first.fit(X, y).get_param_values()
    again = first.fit(X, y).get_param_values()
    assert all(np.array_equal(a, b) for a, b in zip(before, again))
    graph = first.graph
    twin = clone(first)
    del first
    gc.collect()
    twin.fit(X, y)
    assert twin.graph is graph  # taken from the pool, compiled already
    assert all(np.array_equal(a, b) for a, b in zip(before, twin.get_param_values()))


def test_a_freed_graph_keeps_the_state_and_is_not_pooled(blobs):
    from untapped import graph_pool

    X, y = blobs
    model = tiny(seed=4322, epochs=2).fit(X, y)  # a seed no other test uses
    before, state = model.predict_proba(X), model.rng_states()
    graph = model.graph
    model.free_graph()
    assert "graph_" not in vars(model) and model.__sklearn_is_fitted__()
    assert all(graph is not g for graphs in graph_pool.POOL._free.values() for g in graphs)
    assert np.array_equal(model.predict_proba(X), before) and model.rng_states() == state
    assert model.graph is not graph  # built afresh, with the state the model had


def test_bad_inputs_are_one_line_value_errors(fitted, blobs):
    X, y = blobs
    model = tiny(epochs=1)
    cases = [
        (lambda: model.fit(None), "got X=None"),
        (lambda: model.fit(X), "requires y to be passed"),
        (lambda: model.fit(X, y[:-1]), "inconsistent numbers of samples"),
        (lambda: model.fit(X[:, 0], y), "Expected 2D array, got 1D array instead. Reshape your data"),
        (lambda: fitted.predict(X[0]), "Expected 2D array, got 1D array instead. Reshape your data"),
        (lambda: model.fit(X, np.stack([y, y], axis=1)), "y should be a 1d array"),
        (lambda: model.fit(X, np.full(len(y), -1)), "no labeled row"),
        (lambda: model.fit(X, np.zeros(len(y))), "only 1 class"),
        (lambda: model.fit(X, np.linspace(0, 1, len(y))), "Unknown label type"),
        (lambda: model.fit(X, np.where(y == 0, np.nan, y)), "y contains NaN"),
        (lambda: model.fit(X, np.array([None] + list(y[1:]), dtype=object)), "y contains None"),
        (lambda: SSDGM(**dict(TINY, n_features=784)).fit(X, y), "X has 5 features, the model n_features=784"),
        (lambda: fitted.predict(X[:, :4]), "X has 4 features, but SSDGM is expecting 5"),
        (lambda: fitted.predict(np.zeros((0, 5))), "0 sample(s)"),
        (lambda: fitted.encode(X, np.ones((len(X) - 1, 3))), "row counts differ"),
        (lambda: fitted.generate(np.ones((2, 3)), np.zeros((2, 3))), "z must have shape (rows, 2)"),
    ]
    for bad in (np.nan, np.inf, -np.inf, None):
        broken = X.astype(object)
        broken[3, 1] = bad
        cases += [
            (lambda b=broken: model.fit(b, y), "X contains NaN or infinity (at row 3, column 1"),
            (lambda b=broken: fitted.predict_proba(b), "X contains NaN or infinity (at row 3, column 1"),
            (lambda b=broken: fitted.encode(b, np.ones((len(X), 3))), "X contains NaN or infinity"),
            (lambda b=broken: fitted.generate(np.ones((3, 3)), b[3:6, :2]), "z contains NaN or infinity"),
            (lambda b=broken: fitted.generate(b[3:6, :3], np.zeros((3, 2))), "y contains NaN or infinity"),
        ]
    for call, fragment in cases:
        with pytest.raises(ValueError) as info:
            call()
            pytest.fail(f"no error, expected one with {fragment!r}")
        _one_line(info, fragment)


def test_out_of_range_images_are_warned_about(blobs):
    X, y = blobs
    with pytest.warns(UserWarning, match=r"Bernoulli likelihood of intensities in \[0, 1\]"):
        tiny(epochs=1).fit(X * 3 - 1, y)


# ---------------------------------------------------------------- fitted state


def test_not_fitted_before_fit(blobs):
    X, y = blobs
    for model in (tiny(), SSDGM()):  # sizes from the data, and fixed sizes
        for call in (
            lambda: model.predict_proba(X),
            lambda: model.predict(X),
            lambda: model.encode(X, np.ones((len(X), 3))),
            lambda: model.generate(np.ones((2, 10)), np.zeros((2, 2))),
            lambda: model.score(X, y),
        ):
            with pytest.raises(NotFittedError):
                call()


def test_params_clone_and_set_params_unfit(fitted):
    assert fitted.get_params() == tiny().get_params()
    twin = clone(fitted)
    assert "graph_" not in vars(twin) and "classes_" not in vars(twin)
    with pytest.raises(NotFittedError):
        twin.predict_proba(np.zeros((1, 5)))
    other = pickle.loads(pickle.dumps(fitted))
    assert other.set_params(decoder_hidden=(6,)) is other and other.decoder_hidden == (6,)
    with pytest.raises(NotFittedError):  # new weights from the seed: no longer fitted
        other.predict_proba(np.zeros((1, 5)))


def test_pickling_keeps_the_parameters_and_compiles_lazily(fitted, blobs):
    X, _ = blobs
    back = pickle.loads(pickle.dumps(fitted))
    assert "graph_" not in vars(back)  # nothing compiled yet
    assert np.array_equal(back.predict_proba(X), fitted.predict_proba(X))
    for (name, value), theirs in zip(back.param_values_by_name().items(), fitted.get_param_values()):
        assert np.array_equal(value, theirs), name
    assert list(back.optimizer_state()) == list(fitted.optimizer_state())
    assert all(np.array_equal(a, b) for a, b in zip(back.optimizer_state().values(), fitted.optimizer_state().values()))
    assert back.rng_states() == fitted.rng_states()
    assert back.history_ == fitted.history_ and list(back.classes_) == list(fitted.classes_)
    # pickled before its graph is built
    assert np.array_equal(pickle.loads(pickle.dumps(back)).predict(X), fitted.predict(X))


# ---------------------------------------------------------------- the split path


@pytest.fixture(scope="module")
def split(mnist_dir):
    return experiment.load_split(str(mnist_dir), seed=1234, subset=200)


@pytest.mark.slow
def test_fit_on_a_split_is_training_fit(split, tmp_path):
    small = dict(classifier_hidden=(16,), encoder_hidden=(8,), decoder_hidden=(32,), batch_size=64, eval_every=5)
    ours = SSDGM(**small)
    assert ours.fit(split, epochs=2, checkpoint_path=tmp_path / "a.h5") is ours
    theirs = SSDGM(**small)
    training.fit(theirs, split, epochs=2, checkpoint_path=tmp_path / "b.h5")
    a, b = checkpoint.load(tmp_path / "a.h5"), checkpoint.load(tmp_path / "b.h5")
    for name, value in b.params.items():
        assert np.array_equal(a.params[name], value), name
    assert a.rng == b.rng and {k: v for k, v in a.history.items() if k != "seconds"} == {
        k: v for k, v in b.history.items() if k != "seconds"
    }
    assert list(ours.classes_) == list(range(10)) and ours.n_features_in_ == 784
    assert np.array_equal(ours.predict(split.eval_x[:20]), ours.predict_proba(split.eval_x[:20]).argmax(axis=1))
    with pytest.raises(ValueError) as info:
        ours.fit(split, np.zeros(3))
    _one_line(info, "fit(split) takes the split alone; y must be left out")
    untrained = SSDGM(**small)
    training.fit(untrained, split, epochs=0)  # the experiment's --epochs 0: judged on its initial weights
    assert untrained.predict_proba(split.eval_x[:3]).shape == (3, 10)
