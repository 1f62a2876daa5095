"""A study's report: its runs, their statistics and figures (``python run_mnist.py report OUT``).

A *study* is a results folder that ``run_mnist.py`` filled with runs (one
``<model>[-<variant>]-seed<seed>/`` folder each). :func:`write_report` reads
every finished run (``metrics.json``, ``config.json``, ``history.json``),
and the runs recorded in earlier reports' ``study.json`` files given with
``--with`` (a run in both is an error), and writes, into ``<OUT>/report/``
by default:

* ``study.json``: every run (model, variant, seed, cross-entropy on 5-9,
  permuted accuracy, the digit each one-hot shows, every metric reading,
  its last-epoch training terms, where it came from, commit and command,
  and the processor its folder's ``machine.txt`` names, if it has one),
  the run folders without a result (diverged or unfinished), the statistics
  below and the study's wall time;
* ``report.md``: the tables, with the figures linked;
* ``running_mean.png``: the paired mean untapped - M2 and its 95% interval
  against the number of pairs, in seed order;
* ``cross_entropy.png``: the cross-entropy of every run per model and
  variant, with mean and 95% interval and the paper's values marked;
* ``paired.png``: M2 -> untapped (and each variant) seed by seed;
* ``curves.png``: every training term over the epochs, mean and range over
  seeds, per model; ``curves-variants.png`` the same for untapped and its
  variants;
* ``figure2-<group>.png``: Figure 2 (decoder means at z_bar) of every seed.

Four steps, a module each: reading the runs (:mod:`untapped.study.runs`),
their statistics (:mod:`untapped.study.record`), the figures
(:mod:`untapped.study.figures`) and the text (:mod:`untapped.study.markdown`).

Folders that are not finished untapped runs (another tool's ``metrics.json``,
a damaged one, an unfinished run) are left out, and runs of different
lengths are compared: the report says so under *Notes*.

Statistics (:mod:`untapped.study.stats`): per group, mean, sd and 95% t interval
of the cross-entropy and the accuracy, and how many runs show ten distinct
digits; per untapped group, the paired comparison with M2 and (for a
variant) with the code's untapped, over the seeds both have, with p-values
also adjusted over all these comparisons (Benjamini-Hochberg). Then the
pre-stated analysis of untapped against M2 (:mod:`untapped.study.analysis`,
``docs/study-plan.md``): primary, equivalence, the one conclusion,
secondaries, failed runs. And whether each reading of the metric could give
the paper's 2.30 and 2.07 together (:func:`untapped.study.record.paper_verdict`).
"""

import json
import pathlib

from untapped.files import atomic_output, jsonable
from untapped.study.figures import draw_figures
from untapped.study.markdown import markdown
from untapped.study.record import study_record
from untapped.study.runs import ReportError, load_study


def write_report(folder, out=None, recorded=(), note=None):
    """Write ``study.json``, ``report.md`` and the figures for the study in ``folder``; returns the report's path.

    ``recorded``: earlier reports' ``study.json`` files whose runs join the
    folder's (a run in both is an error, :func:`untapped.study.runs.load_study`).
    What the report leaves out or mixes (the study's ``notes``) is listed
    under *Notes* in ``report.md`` and ``study.json``, and each line is
    passed to ``note`` as well.
    """
    folder = pathlib.Path(folder)
    study = load_study(folder, recorded)
    for line in study.notes:
        if note is not None:
            note(line)
    out = pathlib.Path(out) if out is not None else folder / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out} ({' '.join(str(exc).split())})") from None
    record = study_record(folder, study.runs, study.not_finished, study.notes)
    figures = draw_figures(study.runs, record["analysis"], folder, out)
    _write_text(out / "study.json", json.dumps(jsonable(record), indent=2) + "\n")
    _write_text(out / "report.md", markdown(record, figures))
    return out / "report.md"


def _write_text(path, text):
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise ReportError(f"cannot write {path} ({' '.join(str(exc).split())})") from None
