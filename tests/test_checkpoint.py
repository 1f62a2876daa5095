"""HDF5 checkpoints (untapped.checkpoint): layout, round trip, exact resume, bad files, atomic writes."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from untapped import checkpoint, experiment, files
from untapped.checkpoint import CheckpointError

SMALL = dict(classifier_hidden=(16,), encoder_hidden=(8,), decoder_hidden=(32,), batch_size=64, eval_every=5)


@pytest.fixture(scope="module")
def split(mnist_dir):
    return experiment.load_split(str(mnist_dir), seed=1234, subset=200)


@pytest.fixture(scope="module")
def model_and_initial():
    from untapped.model import SSDGM

    model = SSDGM(**SMALL)
    return model, checkpoint.Checkpoint.from_model(model, epoch=0)


@pytest.fixture
def model(model_and_initial):
    model, initial = model_and_initial
    initial.restore(model)
    return model


@pytest.fixture(scope="module")
def saved(model_and_initial, split, tmp_path_factory):
    """A checkpoint after one epoch of the small model."""
    model, initial = model_and_initial
    initial.restore(model)
    path = tmp_path_factory.mktemp("saved") / "one.h5"
    model.fit(split, epochs=1, checkpoint_path=path, config={"note": "test"})
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message and message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- layout and round trip


def test_layout(saved, model):
    with h5py.File(saved, "r") as f:
        assert f.attrs["format"] == checkpoint.FORMAT
        assert f.attrs["format_version"] == checkpoint.FORMAT_VERSION
        assert f.attrs["epoch"] == 1 and f.attrs["seed"] == 1234
        assert f.attrs["mode"] == "c"
        assert "blas__ldflags" in f.attrs and "created" in f.attrs
        assert "pytensor" in json.loads(f.attrs["versions"])
        config = json.loads(f.attrs["config"])
        assert config["model_params"]["classifier_hidden"] == [16]
        assert config["note"] == "test" and config["epochs"] == 1 and config["batch_size"] == 64
        assert json.loads(f["params"].attrs["order"]) == model.param_names
        W = f["params/classifier/hidden1/W"]
        assert W.dtype == np.float32 and W.shape == (784, 16)
        assert "optimizer/adam/t" in f and f["optimizer/adam/m/classifier/hidden1/W"].shape == (784, 16)
        rng = set(json.loads(f["rng"].attrs["order"]))
        assert set(model.rng_states()) | {"shuffle/train", "shuffle/evaluate"} == rng
        assert json.loads(f["rng/shuffle/train"][()])["bit_generator"] == "PCG64"
        assert f["data/unlabeled_index"].shape == (200,)
        assert f["data/unfeatured_z"].shape == (10, 2) and f["data/eval_unfeatured_z"].shape == (10, 2)
        assert list(f["history/epoch"][()]) == [1.0]
        assert "history/train/labeled_elbo" in f and "history/eval/total" in f


def test_round_trip(saved, model, tmp_path):
    ckpt = checkpoint.load(saved)
    assert ckpt.epoch == 1 and ckpt.seed == 1234 and ckpt.path == saved
    assert list(ckpt.params) == model.param_names
    ckpt.restore(model)
    for name, value in model.param_values_by_name().items():
        np.testing.assert_array_equal(value, ckpt.params[name])
    for name, value in model.optimizer_state().items():
        np.testing.assert_array_equal(value, ckpt.optimizer[name])
    assert model.rng_states() == {k: ckpt.rng[k] for k in model.rng_states()}
    again = tmp_path / "again.h5"
    ckpt.save(again)
    back = checkpoint.load(again)
    assert back.history == ckpt.history and back.config == ckpt.config and back.rng == ckpt.rng
    for group in ("params", "optimizer", "data"):
        for name, value in getattr(ckpt, group).items():
            np.testing.assert_array_equal(getattr(back, group)[name], value)


# ---------------------------------------------------------------- exact resume


def test_resume_is_bit_identical(model_and_initial, split, tmp_path):
    """Training 2 epochs == training 1, saving, loading into a fresh model, training 1 more."""
    from untapped.model import SSDGM

    model, initial = model_and_initial
    initial.restore(model)
    model.fit(split, epochs=2, eval_every=1)
    straight = model.checkpoint_  # the snapshot after epoch 2: model state, shuffles, history

    initial.restore(model)
    path = tmp_path / "half.h5"
    model.fit(split, epochs=1, eval_every=1, checkpoint_path=path)
    assert checkpoint.load(path).epoch == 1

    fresh = SSDGM(**SMALL)
    fresh.fit(split, epochs=2, eval_every=1, resume=path, checkpoint_path=path)
    resumed = checkpoint.load(path)
    assert fresh.epoch_ == 2 and resumed.epoch == 2 == straight.epoch
    for name, value in straight.params.items():
        assert np.array_equal(fresh.param_values_by_name()[name], value), name
        assert np.array_equal(resumed.params[name], value), name
    for name, value in straight.optimizer.items():
        assert np.array_equal(resumed.optimizer[name], value), name
    assert resumed.rng == straight.rng  # noise generators and both shuffles
    assert set(resumed.history) == set(straight.history)
    for key, values in straight.history.items():
        if key != "seconds":
            assert resumed.history[key] == values, key


def test_resume_rejects_another_split(saved, model, mnist_dir):
    other = experiment.load_split(str(mnist_dir), seed=99, subset=200)
    before = model.get_param_values()
    with pytest.raises(CheckpointError) as info:
        model.fit(other, epochs=2, resume=saved)
    _one_line_error(info, "data split differs", str(saved))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_param_values()))


def test_resume_into_a_model_of_another_size_fails_cleanly(saved):
    from untapped.model import SSDGM

    other = SSDGM(**{**SMALL, "classifier_hidden": (9,)})
    before = other.get_param_values()
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(saved).restore(other)
    _one_line_error(info, "classifier/hidden1/W", "(784, 16)", "(784, 9)")
    assert all(np.array_equal(a, b) for a, b in zip(before, other.get_param_values()))


# ---------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(tmp_path / "nope.h5")
    _one_line_error(info, "no such checkpoint")


def test_text_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, "not an HDF5 file")


def test_foreign_hdf5_file(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["weights"] = np.random.default_rng(0).normal(size=(5, 5))
        f.attrs["format"] = "something-else"
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, "not an untapped checkpoint")
    with h5py.File(path, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, "not an untapped checkpoint")


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    for size in (len(data) // 2, 1000, len(data) - 100):
        path = tmp_path / f"cut{size}.h5"
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError) as info:
            checkpoint.load(path)
        _one_line_error(info, str(path))


def test_other_format_version(saved, tmp_path):
    path = tmp_path / "future.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, "version 99", f"version {checkpoint.FORMAT_VERSION}")


def test_wrong_shapes_in_the_file(saved, tmp_path, model):
    path = tmp_path / "bad_shape.h5"
    path.write_bytes(saved.read_bytes())
    # Replaced as the writer writes them, with their checksums: a consistent file of other shapes.
    with h5py.File(path, "r+") as f:
        del f["params/decoder/mean/W"]
        checkpoint._create(f, "params/decoder/mean/W", np.zeros((3, 3), np.float32))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)  # its Adam moments no longer match
    _one_line_error(info, "decoder/mean/W")
    with h5py.File(path, "r+") as f:
        for moment in ("m", "v"):
            del f[f"optimizer/adam/{moment}/decoder/mean/W"]
            checkpoint._create(f, f"optimizer/adam/{moment}/decoder/mean/W", np.zeros((3, 3), np.float32))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path).restore(model)
    _one_line_error(info, "decoder/mean/W", "(3, 3)")


def test_missing_dataset(saved, tmp_path):
    path = tmp_path / "holey.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r+") as f:
        del f["params/encoder/std/b"]
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, "missing /params/encoder/std/b")


# ---------------------------------------------------------------- atomic writes


def test_save_leaves_no_temporary_file(model, tmp_path):
    path = tmp_path / "ckpt.h5"
    checkpoint.save(path, model, epoch=0)
    checkpoint.save(path, model, epoch=0)  # replacing an existing file
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.h5"]
    assert checkpoint.load(path).epoch == 0


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_write_keeps_the_existing_checkpoint(saved, tmp_path, monkeypatch, failure):
    path = tmp_path / "ckpt.h5"
    path.write_bytes(saved.read_bytes())
    digest = _sha(path)
    ckpt = checkpoint.load(path)
    real = checkpoint.Checkpoint._write

    def half_written(self, f):
        real(self, f)
        raise failure

    monkeypatch.setattr(checkpoint.Checkpoint, "_write", half_written)
    ckpt.epoch = 7
    with pytest.raises((CheckpointError, KeyboardInterrupt)) as info:
        ckpt.save(path)
    if isinstance(failure, OSError):
        _one_line_error(info, "disk full", str(path))
    assert _sha(path) == digest
    assert checkpoint.load(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.h5"]


def test_save_into_a_missing_folder_is_a_checkpoint_error(model, tmp_path):
    with pytest.raises(CheckpointError) as info:
        checkpoint.save(tmp_path / "no" / "such" / "ckpt.h5", model, epoch=0)
    _one_line_error(info, "cannot write")




# ---------------------------------------------------------------- checksums


@pytest.mark.parametrize(
    "dataset",
    ["params/decoder/mean/W", "optimizer/adam/v/classifier/hidden1/W", "data/unlabeled_index", "history/train/total"],
)
def test_a_flipped_byte_names_the_damaged_dataset(saved, tmp_path, dataset):
    path = tmp_path / "flipped.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r") as f:
        start, size = f[dataset].id.get_offset(), f[dataset].id.get_storage_size()
    data = bytearray(path.read_bytes())
    data[start + size // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, str(path), f"/{dataset}", "damaged")


def test_every_dataset_carries_a_checksum(saved):
    names = []
    with h5py.File(saved, "r") as f:
        assert f.attrs["checksums"] == checkpoint.CHECKSUM
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert all(checkpoint.CHECKSUM in f[name].attrs for name in names)
    assert {"rng/shuffle/train", "optimizer/adam/t", "params/encoder/std/b"} <= set(names)


def test_a_checkpoint_without_checksums_still_loads(saved, tmp_path):
    """What a checkpoint written before checksums looks like: the same file without their attributes."""
    path = tmp_path / "old.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r+") as f:
        del f.attrs["checksums"]
        f.visititems(
            lambda name, obj: obj.attrs.__delitem__(checkpoint.CHECKSUM) if isinstance(obj, h5py.Dataset) else None
        )
    old, new = checkpoint.load(path), checkpoint.load(saved)
    assert old.rng == new.rng and old.history == new.history and old.epoch == new.epoch
    for group in ("params", "optimizer", "data"):
        for name, value in getattr(new, group).items():
            np.testing.assert_array_equal(getattr(old, group)[name], value)


def test_a_removed_checksum_is_an_error(saved, tmp_path):
    path = tmp_path / "stripped.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r+") as f:
        del f["rng/shuffle/evaluate"].attrs[checkpoint.CHECKSUM]
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    _one_line_error(info, "/rng/shuffle/evaluate", "no checksum")


# ---------------------------------------------------------------- temporary files of killed writes

WRITER = """
import sys, time
from untapped.files import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    print("writing", flush=True)
    time.sleep(120)
"""


def _start_writer(path):
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline() == "writing\n"
    return proc


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_the_next_save_removes_what_a_killed_write_left(model, tmp_path):
    path = tmp_path / "checkpoint.h5"
    killed = _start_writer(path)
    killed.kill()  # SIGKILL: no clean-up runs
    killed.wait()
    left = _temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(".checkpoint.h5.")
    live = _start_writer(path)
    try:
        writing = set(_temporaries(tmp_path)) - set(left)
        checkpoint.save(path, model, epoch=0)
        assert set(_temporaries(tmp_path)) == writing  # the killed write's file is gone, the live one's kept
    finally:
        live.kill()
        live.wait()
    assert checkpoint.load(path).epoch == 0


def test_temporaries_of_older_writers_are_removed_once_old(model, tmp_path):
    """Files named before names carried their writer: stale only when untouched for UNOWNED_TEMPORARY_AGE."""
    path = tmp_path / "checkpoint.h5"
    old, recent = tmp_path / ".checkpoint.h5.abcd1234.tmp", tmp_path / ".checkpoint.h5.efgh5678.tmp"
    other = tmp_path / ".metrics.json.ijkl9012.tmp"
    for p in (old, recent, other):
        p.write_bytes(b"x")
    long_ago = time.time() - files.UNOWNED_TEMPORARY_AGE - 60
    for p in (old, other):
        os.utime(p, (long_ago, long_ago))
    checkpoint.save(path, model, epoch=0)
    assert _temporaries(tmp_path) == sorted([recent.name, other.name])  # another target's files are not ours


@pytest.mark.parametrize("names", [("batch",), ("batch", "batch_size")])
def test_a_checkpoint_of_the_old_names_loads_and_resumes_with_the_new(names, saved, tmp_path):
    """A run's configuration written before the batch size was ``batch_size`` everywhere (``batch``, or both)."""
    path = tmp_path / "old-names.h5"
    path.write_bytes(saved.read_bytes())
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["config"])
        params = config["model_params"]
        params["coeff_x_to_y"] = params.pop("coeff_x_to_y_loss")
        config.update(model="untapped", seed=1234, **{name: 64 for name in names})
        if "batch_size" not in names:
            del config["batch_size"]
        f.attrs["config"] = json.dumps(config, sort_keys=True)
        f.attrs[checkpoint.ATTRIBUTES_CHECKSUM] = checkpoint._attributes_digest(f)  # as its writer signed it
    loaded = checkpoint.load(path).config
    assert loaded["batch_size"] == 64 and "batch" not in loaded
    assert loaded["model_params"]["coeff_x_to_y_loss"] == 1.0 and "coeff_x_to_y" not in loaded["model_params"]
    spec = experiment.plan_resume(path, epochs=2)
    assert spec.batch_size == 64 and spec.resume == str(path)
    model = experiment.build_model(spec, checkpoint.load(path))
    assert model.batch_size == 64 and model.coeff_x_to_y_loss == 1.0 and model.epochs == 2
    assert experiment.run_config(spec, model, None)["batch_size"] == 64
