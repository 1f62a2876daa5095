"""Trials on a Dask cluster: a study through --scheduler, a worker killed mid-trial, errors.

The cluster is a real ``LocalCluster`` (two single-threaded worker processes)
started once for the module and closed after it. The runs are tiny (M2, 200
rows, batch 64). Without Dask (the base install) the cluster tests skip;
the test of the one-line error without Dask runs in both installs.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from support.cli_helpers import REPO, SCRIPT, invoke, params

STUDY = ["--model", "m2", "--trials", "2", "--epochs", "10", "--batch", "64", "--subset", "200"]
NO_DASK = "Dask is not installed (pip install -e '.[dask]'); the cluster tests need it"


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-threaded worker processes, and a client of it; both closed afterwards."""
    distributed = pytest.importorskip("distributed", reason=NO_DASK)
    from untapped.experiment.scheduler import kept_environment

    with (
        kept_environment(),
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local,
        distributed.Client(local, set_as_default=False) as client,
    ):
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def study(cluster, mnist_dir, cache, tmp_path_factory):
    """Two M2 runs of 10 epochs through --scheduler, uninterrupted."""
    address, _ = cluster
    out = tmp_path_factory.mktemp("dask") / "study"
    result = invoke(STUDY + ["--scheduler", address, "--data-dir", mnist_dir, "--out", out], cache)
    assert result.exit_code == 0, result.output
    return out, result.output


@pytest.mark.slow
def test_a_study_runs_on_the_cluster(study, cluster):
    out, output = study
    assert f"dask: scheduler {cluster[0]}, 2 worker(s), 2 thread(s)" in output
    workers = set(cluster[1].scheduler_info(n_workers=-1)["workers"])
    for name in ("m2-seed1234", "m2-seed1235"):
        line = next(line for line in output.splitlines() if f"] {name} started on " in line)
        assert line.split(" started on ")[1] in {f"{w}: fresh" for w in workers}, line
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["epochs"] == 10 and f"--scheduler {cluster[0]}" in metrics["command"]
    assert "[2/2 done, 0 running, 0 left]" in output
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(pathlib.Path(r["run_dir"]).name for r in summary["runs"]) == ["m2-seed1234", "m2-seed1235"]


@pytest.mark.slow
def test_the_same_command_keeps_the_finished_runs(study, cluster, mnist_dir, cache):
    out, _ = study
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*")}
    again = invoke(STUDY + ["--scheduler", cluster[0], "--data-dir", mnist_dir, "--out", out], cache)
    assert again.exit_code == 0, again.output
    assert "finished earlier, kept: m2-seed1234, m2-seed1235" in again.output and "started" not in again.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*")} == before


def _started(client, run, timeout=300):
    """The process id of the worker running ``run``, from the trials' events."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        for _, msg in client.get_events("untapped-trials"):
            if msg.get("run") == run and msg.get("event") == "started":
                return msg["pid"]
        time.sleep(0.05)
    raise AssertionError(f"{run} did not start")


@pytest.mark.slow
def test_a_worker_lost_mid_trial(study, cluster, mnist_dir, cache, tmp_path):
    """SIGKILL the worker of m2-seed1235 once its checkpoint exists: the study completes, the trial
    resumes on a worker from that checkpoint, and its parameters equal the uninterrupted run's."""
    address, client = cluster
    reference, _ = study
    out = tmp_path / "killed"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    for name in ("UNTAPPED_EPOCHS", "UNTAPPED_SCHEDULER"):
        env.pop(name, None)
    args = [sys.executable, str(SCRIPT)] + STUDY + [
        "--scheduler", address, "--data-dir", str(mnist_dir), "--out", str(out)
    ]  # fmt: skip
    process = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        checkpoint = out / "m2-seed1235" / "checkpoint.h5"
        began = time.monotonic()
        while not checkpoint.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() - began < 300, "no checkpoint"
            time.sleep(0.05)
        pid = _started(client, "m2-seed1235")
        os.kill(pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "m2-seed1235 started again (attempt 2)" in output and f"resuming from {checkpoint}" in output, output
    log = (out / "m2-seed1235" / "log.txt").read_text()
    resumed_at = int(log.split(f"resuming from {checkpoint} at epoch ")[1].split()[0])
    assert 1 <= resumed_at < 10  # killed during training, not after it
    for name in ("m2-seed1234", "m2-seed1235"):
        ours = json.loads((out / name / "metrics.json").read_text())
        theirs = json.loads((reference / name / "metrics.json").read_text())
        assert ours["epochs"] == 10 and ours["cross_entropy"] == theirs["cross_entropy"], name
        mine, straight = params(out / name / "checkpoint.h5"), params(reference / name / "checkpoint.h5")
        assert mine.keys() == straight.keys() and len(mine) > 0
        for key in mine:
            assert mine[key].tobytes() == straight[key].tobytes(), (name, key)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 2 and all(r["status"] == "ok" for r in summary["runs"])


@pytest.mark.slow
def test_a_worker_that_cannot_write_fails_its_trial_in_one_line(cluster, tmp_path):
    from untapped.experiment import RunSpec
    from untapped.experiment import cluster as dask_trials

    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder cannot be made inside a file, even by root
    spec = RunSpec(model="m2", seed=1, epochs=1, batch_size=64, subset=200, out=str(blocker / "m2-seed1"))
    with pytest.raises(dask_trials.ClusterError) as caught:
        dask_trials.run_trials([spec], scheduler=cluster[0], echo=lambda line: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("1 of 1 run(s) failed; m2-seed1 failed on tcp://127.0.0.1:")
    assert f"OutputError: cannot write to the output folder {blocker / 'm2-seed1'}" in message
    assert "the same command continues the study" in message


def test_an_unreachable_scheduler_is_one_line(tmp_path, mnist_dir, cache):
    """The address from UNTAPPED_SCHEDULER (as --scheduler gives it); nothing to answer on port 9."""
    pytest.importorskip("distributed", reason=NO_DASK)
    args = STUDY + ["--data-dir", mnist_dir, "--out", tmp_path / "x"]
    result = invoke(args, cache, env={"UNTAPPED_SCHEDULER": "tcp://127.0.0.1:9"})
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:9"), lines
    assert not (tmp_path / "x").exists() and "digit classifier" not in result.output  # checked first


def test_dask_without_dask_is_one_line_before_anything_is_done(tmp_path, mnist_dir, monkeypatch):
    """Runs in both installs: in the base install Dask is missing; with Dask its import is made to fail."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # ``import distributed`` raises ImportError
    empty_cache = tmp_path / "cache"
    result = invoke(STUDY + ["--backend", "dask", "--data-dir", mnist_dir, "--out", tmp_path / "out"], empty_cache)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: --backend dask needs Dask, an optional extra: pip install -e '.[dask]' "
        "(or pip install -r requirements-dask.txt)"
    )
    assert not (tmp_path / "out").exists()  # no run folder
    assert not empty_cache.exists()  # no digit classifier fitted (it would be cached there)


def test_a_scheduler_with_another_backend_is_refused(tmp_path, cache, mnist_dir):
    result = invoke(STUDY + ["--scheduler", "tcp://127.0.0.1:9", "--backend", "loky", "--out", tmp_path / "x",
                             "--data-dir", mnist_dir], cache)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --scheduler runs the trials on Dask; drop --backend loky"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("runs, cpus, memory, size", [
    (4, 2, 16e9, (2, 1)),   # one worker per core
    (1, 2, 16e9, (1, 2)),   # one run: one worker on both cores
    (10, 8, 3e9, (2, 4)),   # two runs' memory: two workers of four cores
    (3, 8, 64e9, (3, 2)),
])
def test_local_cluster_size(runs, cpus, memory, size):
    pytest.importorskip("psutil", reason=NO_DASK)  # a dependency of distributed
    from untapped.experiment.scheduler import local_cluster_size

    assert local_cluster_size(runs, cpus, memory) == size


@pytest.mark.parametrize(
    "nthreads, resources, threads", [(1, {}, 1), (4, {}, 1), (8, {"trial": 1}, 8), (8, {"trial": 2}, 4)]
)
def test_trial_threads(nthreads, resources, threads):
    from untapped.experiment.cluster import trial_threads

    assert trial_threads(nthreads, resources) == threads


def test_a_local_cluster_leaves_the_environment_as_it_was():
    distributed = pytest.importorskip("distributed", reason=NO_DASK)
    from untapped.experiment.scheduler import kept_environment

    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    before = {k: os.environ.get(k) for k in names}
    with kept_environment(), distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                      dashboard_address=":0"):
        pass
    assert {k: os.environ.get(k) for k in names} == before
