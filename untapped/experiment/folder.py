"""A run's folder: one writer at a time, its files written whole, never another run's replaced.

A run writes the files of :data:`~untapped.experiment.spec.RUN_FILES` into
its own folder, ``<out>/<run name>/``. :func:`prepare_outputs` checks every
folder of a command before anything is trained, :func:`lock_folder` keeps a
second process out, :func:`write_json` writes atomically, and a finished
run is read back from its ``metrics.json`` (:func:`finished_result`).
"""

import json
import pathlib
import tempfile
from collections import OrderedDict

from untapped.experiment.spec import RUN_FILES, ExperimentError
from untapped.files import FolderLock, FolderLocked, atomic_output, jsonable, one_line, same_file
from untapped.presets import DEFAULT_VARIANT
from untapped.study.run_metrics import MetricsProblem, read_metrics


class OutputError(ExperimentError):
    """The output folder cannot be created or written, or would overwrite a run."""


def read_json(path):
    """The JSON content of ``path``, or None if it cannot be read or parsed."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file + rename)."""
    path = pathlib.Path(path)
    text = json.dumps(jsonable(obj), indent=2) + "\n"
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({one_line(exc)})") from None
    return path


def lock_folder(folder):
    """:class:`untapped.files.FolderLock` on ``folder``, its refusal as an :class:`OutputError`."""
    lock = FolderLock(folder)
    try:
        return lock.acquire()
    except FolderLocked as exc:
        raise OutputError(f"{exc}; wait for it to finish, or choose another --out") from None
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {folder} ({one_line(exc)})") from None


def prepare_outputs(specs):
    """Create every run folder and check it is writable; refuse to overwrite another run.

    Raises :class:`OutputError` before anything is trained, so a bad ``--out``
    costs nothing and destroys nothing. With ``overwrite`` the folder's run
    files are removed first (except when the spec resumes from a checkpoint
    in that folder).
    """
    for spec in specs:
        folder = pathlib.Path(spec.out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            raise OutputError(f"cannot write to the output folder {folder} ({one_line(exc)})") from None
        target = spec.path("checkpoint")
        if spec.overwrite and not (spec.resume is not None and same_file(pathlib.Path(spec.resume).parent, folder)):
            remove_run_files(folder)  # --overwrite replaces the run whole: no stale file is left
        if target.exists() and not spec.overwrite and not spec.done:
            if spec.resume is None or not same_file(spec.resume, target):
                raise OutputError(
                    f"{folder} already holds a run ({target.name}); resume it with --resume {target}, "
                    "choose another --out, or pass --overwrite"
                )


def remove_run_files(folder):
    """Delete the files of a run (:data:`RUN_FILES`) and stale temporary files from ``folder``."""
    folder = pathlib.Path(folder)
    for name in RUN_FILES.values():
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OutputError(f"cannot remove {folder / name} ({one_line(exc)})") from None
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def finished_result(spec):
    """The result of a run that finished earlier, read from its ``metrics.json``
    (checked: :mod:`untapped.study.run_metrics`)."""
    try:
        metrics = read_metrics(spec.path("metrics"))
    except MetricsProblem as exc:
        raise OutputError(one_line(exc)) from None
    return result_from_metrics(metrics, spec.out)


def result_from_metrics(metrics, run_dir):
    """A run's result (what :func:`untapped.experiment.run_trial` returns) from its metrics."""
    return OrderedDict(
        model=metrics["model"],
        seed=metrics["seed"],
        variant=metrics.get("variant", DEFAULT_VARIANT),
        run_dir=str(run_dir),
        status="ok",
        message="",
        epochs=metrics["epochs"],
        cross_entropy=metrics["cross_entropy"],
        accuracy=metrics["accuracy"],
        recognised=[int(d) for d in metrics["recognised"]],
        labels=[int(d) for d in metrics["labels"]],
    )
