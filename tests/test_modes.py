"""The C and Numba backends compute the same model from the same seed."""

import numpy as np

from untapped.model import SSDGM

SMALL = dict(n_features=20, classifier_hidden=(8,), encoder_hidden=(4,), decoder_hidden=(16,), seed=7)


def small_data(rng):
    corners = np.full((10, 10), 0.05 / 9, dtype="float32")
    np.fill_diagonal(corners, 0.95)
    return dict(
        labeled_x=(rng.rand(12, 20) > 0.5).astype("float32"),
        labeled_y=np.eye(10, dtype="float32")[rng.randint(0, 5, 12)],
        unlabeled_x=(rng.rand(9, 20) > 0.5).astype("float32"),
        unfeatured_y=corners,
        unfeatured_z=rng.uniform(-1.5, 1.5, (10, 2)).astype("float32"),
    )


def test_numba_mode_trains_like_the_c_mode():
    # untapped's graph contains M2's (M2 only drops two terms), so one preset
    # covers both; Numba compiles slowly, so the suite runs it once.
    data = small_data(np.random.RandomState(0))
    models = {mode: SSDGM.from_preset("untapped", mode=mode, **SMALL) for mode in ("c", "numba")}
    history = {}
    for mode, model in models.items():
        model.set_training_data(**data)
        history[mode] = [model.train_step(np.arange(8), np.arange(8), np.arange(8) % 10, 0.01) for _ in range(3)]
    # Same noise stream and same maths: only float32 rounding may differ.
    for c_step, numba_step in zip(history["c"], history["numba"]):
        assert list(c_step) == list(numba_step)
        np.testing.assert_allclose(list(numba_step.values()), list(c_step.values()), rtol=1e-5, atol=1e-5)
    for c_value, numba_value in zip(models["c"].get_param_values(), models["numba"].get_param_values()):
        np.testing.assert_allclose(numba_value, c_value, rtol=1e-5, atol=1e-6)
    assert models["c"].rng_states() == models["numba"].rng_states()
