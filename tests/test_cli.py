"""run_mnist.py and ``untapped train``: a one-epoch smoke run, resume through the command line, one-line errors.

The command runs in-process through click's CliRunner (subprocess tests
check the real entry points); runs use a 200-row subset and batches of 64.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from support.cli_helpers import SCRIPT, invoke, sha
from untapped import checkpoint, cli

RUN_FILES = (
    "config.json", "checkpoint.h5", "history.json", "log.txt", "digits_means.png", "digits_double_pass.png",
    "metrics.json",
)  # fmt: skip
QUICK = ["--batch", "64", "--subset", "200", "--eval-every", "1"]


def assert_one_line_error(result, *fragments, code=None):
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not a crash
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]



@pytest.fixture(scope="module")
def smoke(mnist_dir, cache, tmp_path_factory):
    """One epoch of both models; the epoch count comes from UNTAPPED_EPOCHS."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    result = invoke(
        QUICK + ["--model", "both", "--trials", "1", "--out", out, "--data-dir", mnist_dir],
        cache, env={"UNTAPPED_EPOCHS": "1"},
    )
    return out, result


# ---------------------------------------------------------------- the smoke run


def test_smoke_run_writes_every_artefact(smoke):
    out, result = smoke
    assert result.exit_code == 0, result.output
    assert "mode: c" in result.stdout and "blas__ldflags" in result.stdout and "threads:" in result.stdout
    assert "data: " in result.stdout
    for model in ("untapped", "m2"):
        folder = out / f"{model}-seed1234"
        for name in RUN_FILES:
            assert (folder / name).is_file() and (folder / name).stat().st_size > 0, folder / name
        assert (folder / "digits_means.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        config = json.loads((folder / "config.json").read_text())
        assert config["epochs"] == 1 and config["model"] == model and config["subset"] == 200  # env var honoured
        metrics = json.loads((folder / "metrics.json").read_text())
        assert np.isfinite(metrics["cross_entropy"]) and 0 <= metrics["accuracy"] <= 1
        assert len(metrics["recognised"]) == 10 and sorted(metrics["labels"]) == list(range(10))
        history = json.loads((folder / "history.json").read_text())
        assert history["epoch"] == [1.0] and history["eval/epoch"] == [1.0]
        ckpt = checkpoint.load(folder / "checkpoint.h5")
        assert ckpt.epoch == 1 and ckpt.config["model"] == model
    assert (out / "summary.txt").is_file() and (out / "summary.json").is_file()
    table = result.stdout.split("digit shown by y=0..9")[-1]
    assert "untapped" in table and "m2" in table and "+-" in table


@pytest.mark.slow
def test_resume_through_the_cli_is_bit_identical(smoke, mnist_dir, cache, tmp_path):
    out, result = smoke
    assert result.exit_code == 0, result.output
    straight = invoke(QUICK + ["--epochs", 2, "--model", "m2", "--out", tmp_path / "straight", "--data-dir", mnist_dir],
                      cache)
    assert straight.exit_code == 0, straight.output
    shutil.copytree(out / "m2-seed1234", tmp_path / "resumed" / "m2-seed1234")
    path = tmp_path / "resumed" / "m2-seed1234" / "checkpoint.h5"
    resumed = invoke(["--resume", path, "--epochs", 2, "--data-dir", mnist_dir], cache)
    assert resumed.exit_code == 0, resumed.output
    a = checkpoint.load(tmp_path / "straight" / "m2-seed1234" / "checkpoint.h5")
    b = checkpoint.load(path)
    assert a.epoch == b.epoch == 2
    for group in ("params", "optimizer"):
        for name, value in getattr(a, group).items():
            assert np.array_equal(getattr(b, group)[name], value), name
    assert a.rng == b.rng
    assert json.loads((path.parent / "metrics.json").read_text())["epochs"] == 2
    assert b.history["epoch"] == [1.0, 2.0]

    # A run folder written before two coefficients were renamed (coeff_x_to_y,
    # coeff_y_to_x; the only difference of its configuration) resumes the same.
    old = tmp_path / "old" / "m2-seed1234"
    shutil.copytree(out / "m2-seed1234", old)
    renamed = {"coeff_x_to_y_loss": "coeff_x_to_y", "coeff_y_to_x_loss": "coeff_y_to_x"}
    with h5py.File(old / "checkpoint.h5", "r+") as f:
        config = json.loads(f.attrs["config"])
        config["model_params"] = {renamed.get(k, k): v for k, v in config["model_params"].items()}
        f.attrs["config"] = json.dumps(config, sort_keys=True)
        del f.attrs["attributes_sha256"]  # written then without the attributes' checksum
    run_config = json.loads((old / "config.json").read_text())
    run_config["model_params"] = {renamed.get(k, k): v for k, v in run_config["model_params"].items()}
    (old / "config.json").write_text(json.dumps(run_config))
    resumed = invoke(["--resume", old / "checkpoint.h5", "--epochs", 2, "--data-dir", mnist_dir], cache)
    assert resumed.exit_code == 0, resumed.output
    c = checkpoint.load(old / "checkpoint.h5")
    for group in ("params", "optimizer"):
        for name, value in getattr(a, group).items():
            assert np.array_equal(getattr(c, group)[name], value), name
    assert "coeff_x_to_y_loss" in c.config["model_params"] and "coeff_x_to_y" not in c.config["model_params"]


@pytest.mark.slow
def test_untapped_train_trains_what_run_mnist_trains(smoke, mnist_dir, cache, tmp_path):
    """``untapped train`` with the smoke run's options: the same M2 to the bit, its own command in the records."""
    out, result = smoke
    assert result.exit_code == 0, result.output
    args = ["train", *QUICK, "--epochs", 1, "--model", "m2", "--out", tmp_path, "--data-dir", mnist_dir]
    again = invoke(args, cache, command=cli.main)
    assert again.exit_code == 0, again.output
    assert "m2" in again.stdout.split("digit shown by y=0..9")[-1]
    a = checkpoint.load(out / "m2-seed1234" / "checkpoint.h5")
    b = checkpoint.load(tmp_path / "m2-seed1234" / "checkpoint.h5")
    assert a.epoch == b.epoch == 1
    for group in ("params", "optimizer"):
        for name, value in getattr(a, group).items():
            assert np.array_equal(getattr(b, group)[name], value), name
    metrics = json.loads((tmp_path / "m2-seed1234" / "metrics.json").read_text())
    assert metrics["command"].startswith("untapped train --epochs 1 --batch 64 "), metrics["command"]


def test_a_fresh_run_does_not_overwrite_a_saved_run(smoke, mnist_dir):
    out, _ = smoke
    before = sha(out / "untapped-seed1234" / "checkpoint.h5")
    # The same run again: kept as it is (the same command continues a study).
    result = invoke(QUICK + ["--epochs", 1, "--model", "untapped", "--out", out, "--data-dir", mnist_dir])
    assert result.exit_code == 0 and "finished earlier, kept: untapped-seed1234" in result.output, result.output
    # Another run into its folder: refused.
    other = ["--batch", "32"] + QUICK[2:]
    result = invoke(other + ["--epochs", 1, "--model", "untapped", "--out", out, "--data-dir", mnist_dir])
    assert_one_line_error(result, "holds a different run", "--overwrite")
    assert sha(out / "untapped-seed1234" / "checkpoint.h5") == before


@pytest.mark.parametrize(
    "extra, fragment",
    [(["--seed", 7], "--seed 7 conflicts"), (["--trials", 2], "--trials"), (["--epochs", 0], "asks for fewer"),
     (["--model", "untapped"], "conflicts"), (["--batch", 32], "--batch 32 conflicts with the checkpoint's 64")],
)
def test_resume_with_conflicting_options(smoke, mnist_dir, extra, fragment):
    out, _ = smoke
    path = out / "m2-seed1234" / "checkpoint.h5"
    before = sha(path)
    result = invoke(["--resume", path, "--data-dir", mnist_dir] + extra)
    assert_one_line_error(result, fragment)
    assert sha(path) == before


# ---------------------------------------------------------------- bad input


def test_help_shows_defaults_and_options():
    result = invoke(["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for fragment in ("--epochs", "default: 150", "default: 10000", "default: both", "--trials", "--jobs", "--backend",
                     "--seed", "default: 1234", "--data-dir", "--out", "--resume", "--eval-every", "--mode",
                     "default: c", "--version", "UNTAPPED_"):
        assert fragment in text, fragment


def test_untapped_train_has_run_mnists_options_and_untapped_its_commands():
    options = {}
    for name, args, command in [("run_mnist.py", [], cli.run_mnist), ("untapped train", ["train"], cli.main)]:
        result = invoke([*args, "--help"], command=command)
        assert result.exit_code == 0, result.output
        options[name] = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", result.output.split("Options:")[1]))
    assert "--seed" in options["run_mnist.py"] and options["untapped train"] == options["run_mnist.py"]
    result = invoke(["--help"], command=cli.main)
    assert result.exit_code == 0
    assert re.findall(r"^  ([a-z]+)  ", result.output.split("Commands:")[1], re.M) == ["reference", "report", "train"]
    result = invoke(["reference", "--help"], command=cli.main)
    assert re.findall(r"^  ([a-z]+)  ", result.output.split("Commands:")[1], re.M) == ["compare", "describe", "export"]


def test_version():
    import untapped

    result = invoke(["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"untapped {untapped.__version__}"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--epochs", "-1"], "--epochs"),
        (["--epochs", "many"], "--epochs"),
        (["--model", "m3"], "--model"),
        (["--batch", "0"], "--batch"),
        (["--trials", "0"], "--trials"),
        (["--jobs", "0"], "--jobs"),
        (["--mode", "gpu"], "--mode"),
        (["--backend", "threads"], "--backend"),
        (["--no-such-option"], "no-such-option"),
    ],
)
def test_bad_option_values(args, fragment, tmp_path):
    result = invoke(args + ["--out", tmp_path / "out"])
    assert_one_line_error(result, fragment, code=2)
    assert not (tmp_path / "out").exists()


def test_environment_variables_are_read():
    result = invoke([], env={"UNTAPPED_EPOCHS": "-5"})
    assert_one_line_error(result, "--epochs", "-5", code=2)
    result = invoke([], env={"UNTAPPED_MODEL": "nope"})
    assert_one_line_error(result, "--model", code=2)


def test_missing_data_dir(tmp_path):
    result = invoke(["--data-dir", tmp_path / "nowhere", "--out", tmp_path / "out"])
    assert_one_line_error(result, "nowhere", "does not exist", code=1)
    assert not (tmp_path / "out").exists()


def test_corrupt_data_file(mnist_dir, tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    for path in mnist_dir.glob("*-ubyte.gz"):
        shutil.copy(path, data / path.name)
    target = data / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    result = invoke(["--data-dir", data, "--out", tmp_path / "out"])
    assert_one_line_error(result, "t10k-labels-idx1-ubyte.gz", code=1)
    assert not (tmp_path / "out").exists()


def test_foreign_checkpoint_for_resume(tmp_path, mnist_dir):
    text = tmp_path / "notes.h5"
    text.write_text("hello\n")
    result = invoke(["--resume", text, "--data-dir", mnist_dir])
    assert_one_line_error(result, "not an HDF5 file", code=1)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    result = invoke(["--resume", foreign, "--data-dir", mnist_dir])
    assert_one_line_error(result, "not an untapped checkpoint", code=1)
    assert text.read_text() == "hello\n"
    result = invoke(["--resume", tmp_path / "missing.h5", "--data-dir", mnist_dir])
    assert_one_line_error(result, "no such checkpoint", code=1)


def test_output_folder_that_cannot_be_created(tmp_path, mnist_dir):
    blocker = tmp_path / "somefile"
    blocker.write_text("keep me\n")
    result = invoke(["--out", blocker / "sub", "--data-dir", mnist_dir, "--subset", 10])
    assert_one_line_error(result, "cannot write to the output folder", code=1)
    assert blocker.read_text() == "keep me\n"


def command_words(program):
    """``python run_mnist.py``, or ``untapped train`` (the console script if installed, else its entry point)."""
    if program == "python run_mnist.py":
        return [sys.executable, str(SCRIPT)]
    script = pathlib.Path(sys.executable).parent / "untapped"
    entry_point = [sys.executable, "-c", "from untapped.entry_points import untapped; untapped()"]
    return ([str(script)] if script.exists() else entry_point) + ["train"]


@pytest.mark.parametrize("program", ["python run_mnist.py", "untapped train"])
def test_real_entry_point_prints_one_line_error(program, tmp_path):
    """The script itself, in a fresh interpreter: no warning or traceback on stderr."""
    program = command_words(program)
    result = subprocess.run(
        [*program, "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert "nowhere does not exist" in result.stderr
    result = subprocess.run([*program, "--epochs", "-1"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: Invalid value for '--epochs': -1 is not in the range x>=0.\n"
