"""Faults a demanding user meets, grouped by cause: each ends in one line and a non-zero exit, or does the right thing.

Every case checks that no file of a finished run changed. The runs are tiny
(untapped, 200 rows, batch 64); servers and schedulers listen on loopback
only, and no test opens a connection to any other address. The cases that
wait out the real ten-second scheduler deadline are marked ``slow``.
"""

import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import h5py
import numpy as np
import pytest

from support.cli_helpers import REPO, SCRIPT, invoke

RUN = ["--model", "untapped", "--subset", "200", "--batch", "64", "--eval-every", "1"]
NAME = "untapped-seed1234"
NO_DASK = "Dask is not installed (pip install -e '.[dask]'); the scheduler cases need it"


def one_line_error(result, *fragments, code=1):
    """The single ``error: ...`` line of a handled failure (no traceback), checked for ``fragments``."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def digests(folder):
    """SHA-256 of every file under ``folder`` but the lock (which names the last process that held it)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".untapped.lock"
    }


def script(*args, env=None, timeout=60):
    """``python run_mnist.py ARGS`` in a subprocess (a fresh interpreter: its exit handlers, its stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("UNTAPPED_")}
    full_env.update(env or {})
    began = time.perf_counter()
    done = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=REPO, timeout=timeout)
    return done, time.perf_counter() - began


@pytest.fixture(scope="module")
def finished(mnist_dir, cache, tmp_path_factory):
    """A finished run of two epochs, and the command's output (the first, so it fits the digit classifier)."""
    out = tmp_path_factory.mktemp("finished") / "study"
    result = invoke(RUN + ["--epochs", "2", "--data-dir", mnist_dir, "--out", out], cache)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.fixture
def study(finished, tmp_path):
    """A copy of the finished run's folder to damage."""
    out = tmp_path / "study"
    shutil.copytree(finished[0], out)
    return out


# ---------------------------------------------------------------- 1. fewer epochs on a finished run


def test_fewer_epochs_on_a_finished_run_is_refused_before_anything_is_written(study, cache, mnist_dir):
    before = digests(study)
    result = invoke(RUN + ["--epochs", "1", "--data-dir", mnist_dir, "--out", study], cache)
    one_line_error(result, f"{study / NAME} holds a finished run of 2 epochs", "--epochs 1 asks for fewer")
    assert digests(study) == before
    again = invoke(RUN + ["--epochs", "2", "--data-dir", mnist_dir, "--out", study], cache)
    assert again.exit_code == 0 and f"finished earlier, kept: {NAME}" in again.output
    assert json.loads((study / NAME / "config.json").read_text())["epochs"] == 2


def test_fewer_epochs_on_an_interrupted_run_is_refused_too(study, cache, mnist_dir):
    (study / NAME / "metrics.json").unlink()  # as if interrupted after its last checkpoint
    before = digests(study)
    result = invoke(RUN + ["--epochs", "1", "--data-dir", mnist_dir, "--out", study], cache)
    one_line_error(result, "holds a run of 2 epochs", "--epochs 1 asks for fewer")
    assert digests(study) == before


def test_a_trial_continuing_a_checkpoint_past_its_epochs_writes_nothing(study, tmp_path):
    from untapped.experiment import OutputError, RunSpec, run_trial

    spec = RunSpec(model="untapped", subset=200, batch_size=64, epochs=1, out=str(tmp_path / "elsewhere"),
                   resume=str(study / NAME / "checkpoint.h5"))
    with pytest.raises(OutputError, match="is at epoch 2, past the 1 epochs asked for"):
        run_trial(spec)
    assert not (tmp_path / "elsewhere" / "config.json").exists()


# ---------------------------------------------------------------- 2. a scheduler that does not answer


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def http_port():
    """A loopback HTTP server (as ``python -m http.server --bind 127.0.0.1``)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("server", ["silent_port", "http_port"])
def test_a_server_that_is_not_a_scheduler_is_given_up_on_in_time(server, request, monkeypatch):
    pytest.importorskip("distributed", reason=NO_DASK)
    from untapped.experiment import scheduler

    port = request.getfixturevalue(server)
    monkeypatch.setattr(scheduler, "CONNECT_SECONDS", 1.0, raising=False)
    raised = []

    def check():
        try:
            scheduler.check(f"tcp://127.0.0.1:{port}")
        except Exception as exc:
            raised.append(exc)

    waiting = threading.Thread(target=check, daemon=True)  # a thread, so that a check without a deadline fails here
    waiting.start()
    waiting.join(timeout=5)
    assert not waiting.is_alive(), "still waiting for the handshake after 5 s"
    assert len(raised) == 1 and isinstance(raised[0], scheduler.ClusterError), raised
    assert str(raised[0]).startswith(f"no Dask scheduler answered at tcp://127.0.0.1:{port} within 1 s")


@pytest.mark.slow
def test_the_command_says_what_it_tries_and_gives_up_within_30_s(silent_port, tmp_path):
    pytest.importorskip("distributed", reason=NO_DASK)
    done, seconds = script(*RUN, "--epochs", "1", "--out", tmp_path / "x", "--scheduler", f"tcp://127.0.0.1:{silent_port}")
    assert seconds < 30 and done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"dask: connecting to the scheduler at tcp://127.0.0.1:{silent_port}")
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "within 10 s" in done.stderr
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- 3. a malformed scheduler address


@pytest.mark.parametrize("address", ["foo", "tcp://", "http://x:y", "tcp://127.0.0.1:notaport"])
def test_a_malformed_address_is_one_line_at_once(address, tmp_path, cache):
    pytest.importorskip("distributed", reason=NO_DASK)
    began = time.perf_counter()
    result = invoke(RUN + ["--epochs", "1", "--out", tmp_path / "x", "--scheduler", address], cache)
    one_line_error(result, f"{address!r} is not a Dask scheduler address")
    assert result.stdout == f"dask: connecting to the scheduler at {address} (waiting up to 10 s)\n"
    assert time.perf_counter() - began < 5 and not (tmp_path / "x").exists()


def test_a_malformed_address_leaves_no_client_to_time_out_at_exit(tmp_path):
    """In a fresh interpreter: before, a half-made client waited 20 s at exit and printed its destructor's traceback."""
    pytest.importorskip("distributed", reason=NO_DASK)
    done, seconds = script(*RUN, "--epochs", "1", "--out", tmp_path / "x", env={"UNTAPPED_SCHEDULER": "bad"})
    assert done.returncode == 1 and seconds < 15, (seconds, done.stderr)
    assert done.stderr.strip() == "error: 'bad' is not a Dask scheduler address like tcp://host:8786 " \
                                  "(missing port number in address 'bad')"


# ---------------------------------------------------------------- 4. metrics.json of another shape


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _foreign_and_damaged(study):
    """Another tool's metrics, and untapped ones with null, NaN, a string and a list where they do not belong."""
    ours = json.loads((study / NAME / "metrics.json").read_text())
    _write(study / "other-tool" / "metrics.json", '{"accuracy": 0.93}')
    _write(study / "a-list" / "metrics.json", "[1, 2]")
    _write(study / "not-json" / "metrics.json", "{")
    for name, key, value in (("null-ce", "cross_entropy", "null"), ("nan-ce", "cross_entropy", "NaN"),
                             ("text-acc", "accuracy", '"high"'), ("no-digits", "recognised", "[1]")):
        _write(study / name / "metrics.json", json.dumps({**ours, key: "@"}).replace('"@"', value))
    return ["other-tool", "a-list", "not-json", "null-ce", "nan-ce", "text-acc", "no-digits"]


def test_report_leaves_out_what_is_not_an_untapped_run_with_a_note_each(study, cache):
    names = _foreign_and_damaged(study)
    _write(study / "unfinished-seed5" / "config.json", "{}")
    result = invoke(["report", study], cache)
    assert result.exit_code == 0, result.output
    notes = result.stderr.strip().splitlines()
    assert all(line.startswith("note: left out ") for line in notes), notes
    for name in names:
        assert sum(f" {name}/metrics.json: " in line for line in notes) == 1, (name, notes)
    assert any("null-ce/metrics.json: a damaged untapped run (cross_entropy is null" in line for line in notes)
    assert any("other-tool/metrics.json: not an untapped run's metrics" in line for line in notes)
    assert notes[-1] == "note: left out 1 unfinished run(s), without metrics.json: unfinished-seed5"
    record = json.loads((study / "report" / "study.json").read_text())
    assert [r["run"] for r in record["runs"]] == [NAME] and len(record["notes"]) == len(notes)
    assert "## Notes" in (study / "report" / "report.md").read_text()


def test_the_summary_after_a_run_leaves_out_other_metrics_with_a_note(study, cache, mnist_dir):
    names = _foreign_and_damaged(study)
    before = digests(study / NAME)
    result = invoke(RUN + ["--epochs", "2", "--data-dir", mnist_dir, "--out", study], cache)
    assert result.exit_code == 0, result.output
    for name in names:
        assert f"note: left out of the summary: {study / name / 'metrics.json'}: " in result.stdout, name
    summary = json.loads((study / "summary.json").read_text())
    assert [r["run_dir"] for r in summary["runs"]] == [str(study / NAME)]
    assert digests(study / NAME) == before


def test_a_damaged_metrics_of_the_command_s_own_run_is_named(study, cache, mnist_dir):
    path = study / NAME / "metrics.json"
    path.write_text(path.read_text().replace('"cross_entropy": ', '"cross_entropy": null, "was": ', 1))
    before = digests(study)
    result = invoke(RUN + ["--epochs", "2", "--data-dir", mnist_dir, "--out", study], cache)
    one_line_error(result, f"{path}: a damaged untapped run (cross_entropy is null", "remove it to judge the run again")
    assert digests(study) == before


def test_report_notes_runs_of_different_lengths(study, cache):
    shutil.copytree(study / NAME, study / "m2-seed1234")
    metrics = json.loads((study / "m2-seed1234" / "metrics.json").read_text())
    (study / "m2-seed1234" / "metrics.json").write_text(json.dumps({**metrics, "model": "m2", "epochs": 1}))
    result = invoke(["report", study], cache)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == ("note: the runs differ in length (epochs per group, m2: 1; untapped: 2); "
                                     "the summaries and paired comparisons mix them")


# ---------------------------------------------------------------- 5. an unreadable checkpoint


@pytest.fixture
def unreadable(monkeypatch):
    """Make a file unreadable: mode 000, and as root (who reads it anyway) h5py meets the error a user would.

    Root ignores file modes, so for root ``h5py.is_hdf5`` and ``h5py.File``
    raise on that file what they raise for a user without permission
    (``PermissionError``, errno 13, checked as ``nobody``).
    """
    def make(path):
        path.chmod(0)
        if os.geteuid() != 0:
            return
        for name in ("is_hdf5", "File"):
            real = getattr(h5py, name)

            def denied(target, *args, real=real, **kwargs):
                if os.fspath(target) == str(path):
                    raise PermissionError(13, f"Unable to open file (unable to open file: name = '{path}', errno = 13, "
                                              "error message = 'Permission denied')")
                return real(target, *args, **kwargs)

            monkeypatch.setattr(h5py, name, denied)

    return make


def test_an_unreadable_checkpoint_in_a_run_folder_is_one_line(study, cache, mnist_dir, unreadable):
    (study / NAME / "metrics.json").unlink()  # an interrupted run: the same command resumes its checkpoint
    checkpoint = study / NAME / "checkpoint.h5"
    unreadable(checkpoint)
    before = digests(study)
    result = invoke(RUN + ["--epochs", "2", "--data-dir", mnist_dir, "--out", study], cache)
    one_line_error(result, f"{checkpoint}: cannot read the checkpoint (Permission denied)")
    resumed = invoke(RUN + ["--epochs", "2", "--data-dir", mnist_dir, "--resume", checkpoint], cache)
    one_line_error(resumed, f"{checkpoint}: cannot read the checkpoint (Permission denied)")
    checkpoint.chmod(0o644)
    assert digests(study) == before


# ---------------------------------------------------------------- 6. PyTensor in an unusable environment


@pytest.mark.parametrize("variable, value, fragment", [
    ("OMP_NUM_THREADS", "abc", "OMP_NUM_THREADS should be a number, got 'abc'"),
    ("PYTENSOR_FLAGS", "base_compiledir={blocked}/cache", "(the environment sets PYTENSOR_FLAGS=base_compiledir="),
])
def test_an_unusable_environment_for_pytensor_is_one_line_naming_the_variable(variable, value, fragment, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a folder cannot be made under a file
    done, _ = script(*RUN, "--epochs", "1", "--out", tmp_path / "x", env={variable: value.format(blocked=blocked)})
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("error: PyTensor cannot start in this environment: ") and fragment in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


# ---------------------------------------------------------------- the long phases


def _order(text, *lines):
    at = [text.find(line) for line in lines]
    assert all(i >= 0 for i in at) and at == sorted(at), (lines, at)


def test_each_long_phase_has_a_line_before_and_after_with_its_time(finished):
    _, result = finished
    _order(result.stdout, "digit classifier: fitting it on ", "digit classifier: fitted in ",
           f"[{NAME}] compiling train, evaluate", f"[{NAME}] compiled in train ",
           f"[{NAME}] judging: Figure 2", f"[{NAME}] judged in ")


def test_the_progress_bar_shows_the_compile(tmp_path):
    import io
    import types

    from untapped import training

    bar = training._progress_bar(True, 10, NAME)
    bar.file, bar._is_atty = io.StringIO(), True  # as on a terminal
    lines, compiled = [], []
    model = types.SimpleNamespace(
        graph=types.SimpleNamespace(function=lambda name: compiled.append(bar.file.getvalue())), compile_seconds_={}
    )
    training._compile(types.SimpleNamespace(evaluation=True, model=model, log=lines.append), bar)
    assert compiled and all("0%  compiling" in shown for shown in compiled)  # on screen while it compiles
    assert lines[0].startswith("compiling train, evaluate") and lines[1].startswith("compiled in train ")


# ---------------------------------------------------------------- minor cases


def _edit_attribute(path, name, value, drop_digest=False):
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value
        if drop_digest:
            del f.attrs["attributes_sha256"]


def test_an_edited_checkpoint_attribute_is_refused(study):
    from untapped import checkpoint

    path = study / NAME / "checkpoint.h5"
    _edit_attribute(path, "epoch", -5)
    with pytest.raises(checkpoint.CheckpointError, match="attributes .* were altered"):
        checkpoint.load(path)


def test_a_checkpoint_without_attribute_checksums_loads_and_its_epoch_must_match_its_history(study):
    from untapped import checkpoint

    path = study / NAME / "checkpoint.h5"
    with h5py.File(path, "r+") as f:  # as written before attributes had a checksum
        del f.attrs["attributes_sha256"]
    old = checkpoint.load(path)
    assert old.epoch == 2 and len(old.history["epoch"]) == 2
    _edit_attribute(path, "epoch", -5)
    with pytest.raises(checkpoint.CheckpointError, match="epoch -5 does not match its history of 2 epochs"):
        checkpoint.load(path)


def test_a_full_disk_is_a_short_line_and_the_checkpoint_stays(study, monkeypatch):
    """The bytes go to /dev/full, which fails every write with ENOSPC as a full disk does."""
    import contextlib
    import pathlib

    from untapped import checkpoint

    path = study / NAME / "checkpoint.h5"
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint, "atomic_output", lambda target: contextlib.nullcontext(pathlib.Path("/dev/full")))
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path).save(path)
    assert str(caught.value) == f"{path}: cannot write the checkpoint (No space left on device)"
    assert path.read_bytes() == before


def test_help_says_what_each_exit_status_covers_and_which_variants_are_untapped_only():
    text = " ".join(invoke(["--help"], terminal_width=4000).output.split())
    assert "1 error (data, files, scheduler, and options that contradict each other or the run they continue)" in text
    assert "2 bad option (unknown, or a value out of its range)" in text
    for name in ("onehot-prior-z", "prior-z", "eq17"):
        assert f"{name} (untapped only: give --model untapped):" in text
    assert "paper-weights:" in text


def test_an_untapped_only_variant_with_both_models_says_what_to_give(tmp_path, cache):
    result = invoke(["--variant", "eq17", "--out", tmp_path / "x"], cache)
    one_line_error(result, "--variant eq17 applies to untapped only, not m2; give --model untapped")


def test_a_subset_that_cuts_nothing_is_refused(tmp_path, cache, mnist_dir):
    result = invoke(
        RUN + ["--subset", "35735", "--epochs", "1", "--data-dir", mnist_dir, "--out", tmp_path / "x"], cache
    )
    one_line_error(result, "--subset 35735 cuts nothing: the largest set has 35735 rows "
                           "(labeled 35735, evaluation 34265, unlabeled 20000)")
    assert not (tmp_path / "x").exists()


def test_a_task_the_scheduler_lost_says_so():
    from untapped.experiment import cluster

    class Lost:  # what a future of a dead scheduler gives: no exception recorded
        status = "cancelled"

        def exception(self):
            return None

    assert cluster._failure(Lost(), NAME) == f"{NAME}: the scheduler lost the task (its state: cancelled)"


def test_a_second_ctrl_c_quits_at_once_in_one_line(tmp_path):
    """The first Ctrl-C ends the command; another arrives while an exit handler runs."""
    program = textwrap.dedent(f"""
        import atexit, os, runpy, signal, sys, time
        import untapped.experiment.trials as trials
        sys.argv = ["run_mnist.py", "--model", "untapped", "--out", {str(tmp_path / 'x')!r}]
        def first_ctrl_c(request, echo=print):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        trials.run_request = first_ctrl_c
        atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))
        runpy.run_path({str(SCRIPT)!r}, run_name="__main__")
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 130
    assert done.stderr.strip().splitlines() == [
        "interrupted: checkpoints of completed epochs are kept in the run folders",
        "interrupted: quitting now; the files on disk are whole",
    ], done.stderr


def test_signal_handlers_are_restored_after_a_command(tmp_path, cache):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    invoke(["--variant", "eq17", "--out", tmp_path / "x"], cache)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_history_epochs_of_the_finished_run_match_its_checkpoint(finished):
    """The invariant the checkpoint's check relies on: one history entry per epoch done."""
    from untapped import checkpoint

    ckpt = checkpoint.load(finished[0] / NAME / "checkpoint.h5")
    assert ckpt.epoch == 2 and np.array_equal(ckpt.history["epoch"], [1.0, 2.0])
