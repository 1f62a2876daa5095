"""A study: the same command continues it, its variants, and its report.

Tiny studies: 200 rows of each set, batch 64, a few epochs. The interrupt
test runs the command as a subprocess and sends it SIGINT, as Ctrl-C would.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support.cli_helpers import REPO, SCRIPT, invoke, params, sha
from untapped import cli
from untapped.study import stats
from untapped.study.record import summarise
from untapped.study.runs import load_study

TINY = ["--batch", "64", "--subset", "200"]


def run_hashes(folder):
    return {p.relative_to(folder).as_posix(): sha(p) for p in sorted(pathlib.Path(folder).glob("*/*")) if p.is_file()}




@pytest.fixture(scope="module")
def study(mnist_dir, cache, tmp_path_factory):
    """Two seeds of both models, two epochs, and one seed of the eq17 variant, in one folder."""
    out = tmp_path_factory.mktemp("study") / "out"
    base = TINY + ["--epochs", 2, "--data-dir", mnist_dir, "--out", out]
    first = invoke(base + ["--model", "both", "--trials", 2], cache)
    assert first.exit_code == 0, first.output
    variant = invoke(base + ["--model", "untapped", "--variant", "eq17"], cache)
    assert variant.exit_code == 0, variant.output
    return out, base


@pytest.mark.slow
def test_the_same_command_keeps_finished_runs(study, cache):
    out, base = study
    before = run_hashes(out)
    again = invoke(base + ["--model", "both", "--trials", 2], cache)
    assert again.exit_code == 0, again.output
    assert "finished earlier, kept: untapped-seed1234, m2-seed1234, untapped-seed1235, m2-seed1235" in again.output
    assert "*Epoch" not in again.output  # nothing trained
    assert run_hashes(out) == before


@pytest.mark.slow
def test_summary_holds_every_run_of_the_folder(study):
    out, _ = study
    summary = json.loads((out / "summary.json").read_text())
    names = sorted(pathlib.Path(r["run_dir"]).name for r in summary["runs"])
    assert names == ["m2-seed1234", "m2-seed1235", "untapped-eq17-seed1234", "untapped-seed1234", "untapped-seed1235"]
    assert set(summary["summary"]) == {"untapped", "m2", "untapped/eq17"}
    text = (out / "summary.txt").read_text()
    assert "untapped/eq17" in text and any(line.split()[:2] == ["m2", "1235"] for line in text.splitlines())


@pytest.mark.slow
def test_a_different_run_in_the_folder_is_refused(study, cache, mnist_dir):
    out, _ = study
    before = run_hashes(out)
    result = invoke(["--batch", "32", "--subset", "200", "--epochs", 2, "--data-dir", mnist_dir, "--out", out,
                     "--model", "m2"], cache)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a different run (batch_size differ)" in lines[0] and "--overwrite" in lines[0]
    assert run_hashes(out) == before


@pytest.mark.parametrize("batch, differ", [(64, None), (32, "(batch_size differ)")])
def test_a_config_json_of_the_old_names_is_read_as_the_run_it_records(batch, differ, tmp_path):
    """``config.json`` as written before the batch size was ``batch_size`` everywhere: ``batch``, an old coefficient."""
    from untapped import experiment

    (spec,) = experiment.plan_runs(["m2"], [3], tmp_path, epochs=2, batch_size=64, subset=200)
    config = experiment.run_config(spec, experiment.build_model(spec), None)
    config["batch"] = config.pop("batch_size")
    config["model_params"]["coeff_x_to_y"] = config["model_params"].pop("coeff_x_to_y_loss")
    config["batch"] = config["model_params"]["batch_size"] = batch
    pathlib.Path(spec.out).mkdir(parents=True)
    experiment.write_json(spec.path("config"), config)
    if differ is None:
        assert experiment.continue_runs([spec]) == [spec]  # the same run, not started yet: a fresh start
    else:
        with pytest.raises(experiment.OutputError, match=re.escape(differ)):
            experiment.continue_runs([spec])


def test_a_variant_that_does_not_apply_is_refused(cache, tmp_path, mnist_dir):
    result = invoke(TINY + ["--epochs", 1, "--model", "m2", "--variant", "eq17", "--out", tmp_path / "x",
                            "--data-dir", mnist_dir], cache)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: --variant eq17 applies to untapped only, not m2; give --model untapped"
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_variant_runs_record_their_settings(study):
    out, _ = study
    config = json.loads((out / "untapped-eq17-seed1234" / "config.json").read_text())
    assert config["variant"] == "eq17" and config["model_params"]["reverse_elbo_variant"] == "eq17"
    metrics = json.loads((out / "untapped-eq17-seed1234" / "metrics.json").read_text())
    assert metrics["variant"] == "eq17" and metrics["command"].startswith("python run_mnist.py")
    assert set(metrics["readings"]) >= {"default", "unpermuted", "hungarian", "renormalised", "five_canonical"}
    assert metrics["readings"]["default"]["cross_entropy"] == pytest.approx(metrics["cross_entropy"])


@pytest.mark.slow
def test_report_writes_figures_and_statistics(study, cache):
    out, _ = study
    result = invoke(["report", out], cache)
    assert result.exit_code == 0, result.output
    report = out / "report"
    for name in ("cross_entropy.png", "paired.png", "curves.png", "figure2-untapped.png", "figure2-m2.png",
                 "figure2-untapped-eq17.png", "curves-variants.png"):
        data = (report / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, name
    # Figure 2's grid is stored in one channel: it is drawn in grays, as the runs' own digits images are.
    from PIL import Image

    grid = Image.open(report / "figure2-m2.png")
    digits = np.asarray(Image.open(out / "m2-seed1234" / "digits_means.png").convert("RGBA"))
    assert grid.mode == "L" and (digits[..., 0] == digits[..., 1]).all() and (digits[..., 1] == digits[..., 2]).all()
    text = (report / "report.md").read_text()
    assert "untapped vs m2" in text and "untapped/eq17 vs untapped" in text
    record = json.loads((report / "study.json").read_text())
    assert len(record["runs"]) == 5
    # The summary is recomputed from the runs (independently of the report's own code path).
    ce = {g: [r["cross_entropy"] for r in record["runs"] if r["group"] == g] for g in ("untapped", "m2")}
    assert record["summary"]["m2"]["cross_entropy"]["mean"] == pytest.approx(np.mean(ce["m2"]))
    assert record["summary"]["m2"]["cross_entropy"]["sd"] == pytest.approx(np.std(ce["m2"], ddof=1))
    pair = record["paired"]["untapped vs m2"]["cross_entropy"]
    assert pair["mean_difference"] == pytest.approx(np.mean(np.subtract(ce["untapped"], ce["m2"])))
    # Each run also drew its own curves.
    assert (out / "untapped-seed1234" / "curves.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_untapped_report_is_run_mnists_report(study, cache, tmp_path):
    out, _ = study
    texts = {}
    for name, command in (("run_mnist.py", cli.run_mnist), ("untapped", cli.main)):
        result = invoke(["report", out, "--to", tmp_path / name], cache, command=command)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"report: {tmp_path / name / 'report.md'}\n"
        record = json.loads((tmp_path / name / "study.json").read_text())
        generated = record.pop("generated")  # the time of writing, the one difference
        texts[name] = [(tmp_path / name / "report.md").read_text().replace(generated, ""), record]
    assert texts["untapped"] == texts["run_mnist.py"]


def test_report_of_an_empty_folder_is_one_line(tmp_path, cache):
    result = invoke(["report", tmp_path], cache)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {tmp_path} holds no finished run (no <run>/metrics.json)"


@pytest.mark.slow
def test_summaries_match_load_study(study):
    out, _ = study
    runs = load_study(out).runs
    summary = summarise(runs)
    assert summary["untapped"]["cross_entropy"] == stats.describe(
        [r["cross_entropy"] for r in runs if r["group"] == "untapped"]
    )


def test_one_pass_over_the_run_folders_tells_finished_diverged_unfinished_and_left_out(tmp_path):
    """Every run folder without a result is in ``not_finished`` and in the note, once; the rest is not a run's."""
    def put(name, **files):
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file.replace("_", ".")).write_text(text)

    metrics = dict(model="untapped", seed=1, epochs=2, cross_entropy=1.5, accuracy=0.5,
                   recognised=list(range(10)), labels=list(range(10)))
    put("untapped-seed1", metrics_json=json.dumps(metrics))
    put("untapped-seed2", config_json=json.dumps(dict(model="untapped", seed=2)))
    put("m2-seed1", config_json=json.dumps(dict(model="m2", seed=1)), log_txt="diverged: the total is nan\n")
    put("untapped-eq17-seed3", log_txt="")  # named as a run, nothing else written yet
    put("odd", checkpoint_h5="", config_json="{")  # a run's, but neither its config nor its name says which
    put("report", report_md="")  # not a run's
    put(".cache", metrics_json="{")  # hidden: not read
    study = load_study(tmp_path)
    assert [r["run"] for r in study.runs] == ["untapped-seed1"]
    assert [(r["run"], r["group"], r["seed"], r["status"], r["message"]) for r in study.not_finished] == [
        ("m2-seed1", "m2", 1, "diverged", "the total is nan"),
        ("untapped-eq17-seed3", "untapped/eq17", 3, "unfinished", None),
        ("untapped-seed2", "untapped", 2, "unfinished", None),
    ]
    assert study.notes == [
        "left out 4 unfinished run(s), without metrics.json: m2-seed1, odd, untapped-eq17-seed3, untapped-seed2"
    ]


def test_the_processor_each_run_ran_on_is_read_and_a_pair_split_across_two_is_named(tmp_path):
    """machine.txt's processor goes into the run's record and the report; a seed whose two runs name different
    processors is named in the notes (docs/study-plan.md, third amendment) and still analysed."""
    zen3, skylake = "AMD EPYC, family 25 model 1 (avx2 fma), 2 CPUs", "Intel Xeon, family 6 model 85 (avx2 avx512f fma)"
    where = {("m2", 1): zen3, ("untapped", 1): zen3, ("m2", 2): zen3, ("untapped", 2): skylake, ("m2", 3): None,
             ("untapped", 3): None}
    for (model, seed), processor in where.items():
        run = tmp_path / "runs" / f"{model}-seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(dict(
            model=model, seed=seed, epochs=2, cross_entropy=1.0 + seed / 10 + (model == "m2") * seed ** 2 / 50,
            accuracy=0.5, recognised=list(range(10)), labels=list(range(10)))))
        if processor is not None:
            (run / "machine.txt").write_text(f"processor: {processor}; OPENBLAS_CORETYPE=Haswell\n")
    (tmp_path / "runs" / "m2-seed3" / "machine.txt").write_text("no processor line here\n")

    study = load_study(tmp_path / "runs")
    assert {(r["group"], r["seed"]): r["processor"] for r in study.runs} == where
    split = [n for n in study.notes if "different processors" in n]
    assert len(split) == 1 and split[0].startswith("seed 2's runs ran on different processors (m2: AMD EPYC")
    assert "untapped: Intel Xeon" in split[0]

    from untapped.study.report import write_report

    text = write_report(tmp_path / "runs", tmp_path / "report").read_text()
    record = json.loads((tmp_path / "report" / "study.json").read_text())
    assert record["analysis"]["seeds"] == [1, 2, 3]  # the split pair is kept
    assert f"- {split[0]}" in text
    assert f"Processors, as each run folder's `machine.txt` names them: 3 runs on {zen3}; 1 run on {skylake}." in text
    assert "Not named for 2 runs." in text
    assert "6 runs read from their folders carry no timestamps (no log.txt)." in text
    assert "earlier study.json" not in text


def _wait_for(predicate, process, timeout):
    began = time.monotonic()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"the command ended early ({process.returncode})")
        if time.monotonic() - began > timeout:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


@pytest.mark.slow
def test_interrupted_study_resumes_and_keeps_finished_runs(mnist_dir, cache, tmp_path):
    """SIGINT during the second run; the same command then completes the study, the first run untouched,
    and the resumed run's parameters equal those of an uninterrupted run of the same seed."""
    out = tmp_path / "study"
    args = [sys.executable, str(SCRIPT)] + TINY + ["--epochs", "60", "--model", "untapped", "--trials", "2",
                                                   "--data-dir", str(mnist_dir), "--out", str(out)]
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("UNTAPPED_EPOCHS", None)
    process = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = out / "untapped-seed1235"
    _wait_for(lambda: (second / "checkpoint.h5").exists(), process, timeout=300)
    first_files = run_hashes(out)
    first_files = {k: v for k, v in first_files.items() if k.startswith("untapped-seed1234/")}
    assert "untapped-seed1234/metrics.json" in first_files
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "interrupted" in output and not (second / "metrics.json").exists()

    resumed = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "finished earlier, kept: untapped-seed1234" in resumed.stdout
    assert "resuming from their checkpoints: untapped-seed1235" in resumed.stdout
    after = {k: v for k, v in run_hashes(out).items() if k.startswith("untapped-seed1234/")}
    assert after == first_files
    assert (second / "metrics.json").exists()

    straight = tmp_path / "straight"
    alone = [sys.executable, str(SCRIPT)] + TINY + ["--epochs", "60", "--model", "untapped", "--seed", "1235",
                                                    "--data-dir", str(mnist_dir), "--out", str(straight)]
    done = subprocess.run(alone, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ours, theirs = params(second / "checkpoint.h5"), params(straight / "untapped-seed1235" / "checkpoint.h5")
    assert ours.keys() == theirs.keys() and len(ours) == 20
    for name in ours:
        assert ours[name].tobytes() == theirs[name].tobytes(), name


# ---------------------------------------------------------------- the run folder's guarantees


def one_line_error(result, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.slow
def test_one_writer_at_a_time(tmp_path, cache, mnist_dir):
    from untapped.files import FolderLock

    out = tmp_path / "out"
    with FolderLock(out):  # another process would hold it the same way
        result = invoke(TINY + ["--epochs", 1, "--model", "m2", "--out", out, "--data-dir", mnist_dir], cache)
        line = one_line_error(result)
    assert "is being written by another untapped process" in line and f"pid {os.getpid()}" in line
    assert not (out / "m2-seed1234").exists()
    # Released (as when the holder ends, however it ends): the folder is usable again.
    result = invoke(TINY + ["--epochs", 1, "--model", "m2", "--out", out, "--data-dir", mnist_dir], cache)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_overwrite_replaces_a_run_whole(tmp_path, cache, mnist_dir):
    out = tmp_path / "out"
    assert invoke(TINY + ["--epochs", 2, "--model", "m2", "--out", out, "--data-dir", mnist_dir], cache).exit_code == 0
    run = out / "m2-seed1234"
    (run / ".checkpoint.h5.stale.tmp").write_text("left by a kill -9")
    again = invoke(TINY + ["--epochs", 1, "--model", "m2", "--out", out, "--data-dir", mnist_dir, "--overwrite"], cache)
    assert again.exit_code == 0, again.output
    log = (run / "log.txt").read_text()
    assert log.count("untapped ") == 1 and "*Epoch=2" not in log  # not appended to the old log
    assert json.loads((run / "history.json").read_text())["epoch"] == [1.0]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
    assert not (run / ".checkpoint.h5.stale.tmp").exists()


@pytest.mark.slow
def test_resume_into_another_folder_with_overwrite_keeps_its_output(tmp_path, cache, mnist_dir):
    first, other = tmp_path / "first", tmp_path / "other"
    for out in (first, other):
        result = invoke(TINY + ["--epochs", 1, "--model", "m2", "--out", out, "--data-dir", mnist_dir], cache)
        assert result.exit_code == 0, result.output
    checkpoint = first / "m2-seed1234" / "checkpoint.h5"
    result = invoke(
        ["--resume", checkpoint, "--epochs", 2, "--out", other, "--overwrite", "--data-dir", mnist_dir], cache
    )
    assert result.exit_code == 0, result.output
    assert "*Epoch=2" in result.output  # the epoch lines are shown when resuming, too
    assert json.loads((other / "m2-seed1234" / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seed", "99999999999999999999"], "--seed"),
        (["--seed", "4294967295", "--trials", "2"], "needs seeds up to 4294967296; the largest is 4294967295"),
    ],
)
def test_seeds_past_32_bits_are_refused_before_anything_runs(args, fragment, tmp_path, cache, mnist_dir):
    result = invoke(TINY + ["--epochs", 1, "--out", tmp_path / "out", "--data-dir", mnist_dir] + args, cache)
    line = one_line_error(result, code=result.exit_code)
    assert result.exit_code in (1, 2) and fragment in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("variable, value, recorded", [("UNTAPPED_SEED", "5", "1234"), ("UNTAPPED_BATCH", "32", "64")])
def test_a_conflict_from_the_environment_says_so(variable, value, recorded, study, cache):
    out, _ = study
    checkpoint = out / "m2-seed1234" / "checkpoint.h5"
    result = invoke(["--resume", checkpoint, "--epochs", "3"], cache, env={variable: value})
    line = one_line_error(result)
    assert line == (
        f"error: {variable}={value} (from the environment) conflicts with the checkpoint's {recorded}; "
        "omit it when resuming"
    )


def test_a_data_dir_missing_a_file_names_it(tmp_path, cache, mnist_dir):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (partial / name).symlink_to(mnist_dir / name)
    result = invoke(TINY + ["--epochs", 1, "--out", tmp_path / "out", "--data-dir", partial], cache)
    line = one_line_error(result)
    assert "holds 3 of the 4 MNIST IDX files; missing t10k-labels-idx1-ubyte(.gz)" in line


# ---------------------------------------------------------------- a report with an earlier study's runs


def _earlier_study(path, seeds):
    """A fake earlier report's study.json: M2 and untapped for ``seeds``, no training terms or timestamps."""
    rng = np.random.default_rng(7)
    runs = []
    for seed in seeds:
        for model in ("m2", "untapped"):
            ce = float(1.3 + rng.normal(0, 0.2))
            recognised = list(range(10)) if (seed + (model == "m2")) % 2 else [0, 1, 2, 3, 4, 5, 5, 7, 8, 9]
            runs.append(dict(run=f"{model}-seed{seed}", model=model, variant="code", group=model, seed=seed, epochs=150,
                             cross_entropy=ce, accuracy=float(rng.uniform(0.5, 0.7)), recognised=recognised,
                             distinct_digits=len(set(recognised)),
                             readings={"default": {"cross_entropy": ce, "accuracy": 0.6}},
                             commit="0" * 40, command="python run_mnist.py", train_seconds=300.0))
    path.write_text(json.dumps({"study": "earlier", "runs": runs}))
    return path


@pytest.fixture
def combined(study, tmp_path):
    """The tiny study's folder (without checkpoints), a diverged run folder, and a fake earlier study.json."""
    import shutil

    out, _ = study
    folder = tmp_path / "new"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("*.h5", "report"))
    diverged = folder / "untapped-seed1236"
    diverged.mkdir()
    (diverged / "config.json").write_text(json.dumps({"model": "untapped", "seed": 1236, "variant": "code"}))
    (diverged / "log.txt").write_text("untapped 0.1.0: untapped-seed1236, 2026-01-01 00:00:00\n"
                                      "diverged: epoch 2, step 1: non-finite training term(s) total\n")
    (folder / "m2-seed1236").mkdir()  # its partner has not started
    earlier = _earlier_study(tmp_path / "study.json", range(1240, 1244))
    return folder, earlier


@pytest.mark.slow
def test_report_with_an_earlier_study(combined, cache, tmp_path):
    folder, earlier = combined
    result = invoke(["report", folder, "--with", earlier, "--to", tmp_path / "report"], cache)
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    data = (report / "running_mean.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5000
    record = json.loads((report / "study.json").read_text())
    text = (report / "report.md").read_text()
    for heading in ("## The pre-stated analysis (docs/study-plan.md)", "## Per seed", "## Last-epoch training terms",
                    "## Wall time", "### Could a reading give the paper's M2 2.30 and untapped 2.07 together?",
                    "![The paired mean"):
        assert heading in text, heading
    analysis = record["analysis"]
    assert analysis["seeds"] == [1234, 1235, 1240, 1241, 1242, 1243]
    assert [x["seed"] for x in analysis["left_out"]] == [1236] and analysis["left_out"][0]["failed"]
    assert "seed 1236: failed: untapped-seed1236 diverged (epoch 2, step 1" in text
    assert record["analysis"]["conclusion"]["text"] in text
    assert "Sensitivity: no diverged run has a partner with a result yet" in text  # m2-seed1236 has not started
    # The folder's pairs and the earlier study's, each alone (they may have run on different machines).
    sources = [(g["source"], g["seeds"]) for g in analysis["by_source"]]
    assert sources == [("run folder", [1234, 1235]), (f"{earlier.parent.name}/study.json", [1240, 1241, 1242, 1243])]
    assert "Sensitivity, by source:" in text and f"| {earlier.parent.name}/study.json | 4 | 1240-1243 | " in text
    # Training terms: the folder's runs from their history.json, the earlier study's missing.
    for r in record["runs"]:
        terms = r["training_terms"]
        if r["source"] == "run folder":
            history = json.loads((folder / r["run"] / "history.json").read_text())
            assert terms["total"] == history["train/total"][-1]
            assert terms["labeled_elbo"] == history["train/labeled_elbo"][-1]
            assert (terms["reverse_elbo"] is None) == (r["model"] == "m2")
            assert r["started"] is not None
        else:
            assert r["source"] == f"{earlier.parent.name}/study.json"
            assert all(v is None for v in terms.values())
    assert "Missing (null in study.json) for the 8 runs taken from" in text
    wall = record["wall_time"]
    assert wall["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in record["runs"]))
    # The derived readings: bits is the default over ln 2; class_averaged_q is ln 10.
    for r in record["runs"]:
        assert r["readings"]["bits"]["cross_entropy"] == pytest.approx(
            r["readings"]["default"]["cross_entropy"] / np.log(2)
        )
        assert r["readings"]["class_averaged_q"]["cross_entropy"] == pytest.approx(np.log(10))
    assert record["paper_verdicts"]["class_averaged_q"]["possible"] is False


@pytest.mark.slow
def test_report_refuses_a_run_in_both(combined, cache, tmp_path):
    folder, _ = combined
    clash = _earlier_study(tmp_path / "clash.json", [1235])
    result = invoke(["report", folder, "--with", clash, "--to", tmp_path / "r"], cache)
    line = one_line_error(result)
    assert "m2 seed 1235 is both in" in line and "a run is reported once" in line
    assert not (tmp_path / "r" / "study.json").exists()


@pytest.mark.slow
def test_report_refuses_a_file_that_is_not_a_study(combined, cache, tmp_path):
    folder, _ = combined
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    line = one_line_error(invoke(["report", folder, "--with", bad], cache))
    assert line == f"error: {bad} is not a report's study.json (no runs list)"
    line = one_line_error(invoke(["report", folder, "--with", tmp_path / "none.json"], cache))
    assert line == f"error: {tmp_path / 'none.json'} does not exist"


@pytest.mark.parametrize("recorded, shown", [
    ("python run_mnist.py --epochs 150 --model both --trials 10 --data-dir /srv/lab/../shared/data/mnist "
     "--out /scratch/study/results",
     "python run_mnist.py --epochs 150 --model both --trials 10 --data-dir MNIST_DIR --out STUDY_DIR"),
    ("python run_mnist.py --out=results/study --seed 1244 --data-dir /srv/data",
     "python run_mnist.py --out=STUDY_DIR --seed 1244 --data-dir MNIST_DIR"),
    ("python run_mnist.py --epochs 2", "python run_mnist.py --epochs 2"),
])
def test_the_reports_commands_name_no_machines_folders(recorded, shown):
    """report.md shows --data-dir and --out as placeholders (study.json keeps the command as recorded), so a
    report committed from one machine names none of its folders."""
    from untapped.study.markdown import portable_command

    assert portable_command(recorded) == shown
