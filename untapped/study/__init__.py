"""A study: the finished runs of a results folder, read, analysed and reported (``run_mnist.py report``).

The experiment (:mod:`untapped.experiment`) makes runs; the study reads what
they wrote. Each module is imported by its own name (this package re-exports
nothing):

* :mod:`~untapped.study.run_metrics`: a run's ``metrics.json``, checked (an
  untapped run's, another tool's, or damaged); the experiment reads it too;
* :mod:`~untapped.study.runs`: a results folder's runs as records, and the
  runs an earlier report recorded;
* :mod:`~untapped.study.stats`: summary and paired statistics over seeds (SciPy);
* :mod:`~untapped.study.analysis`: the pre-stated analysis of ``docs/study-plan.md``;
* :mod:`~untapped.study.record`: ``study.json``, the runs and their statistics;
* :mod:`~untapped.study.figures`: the study's figures, and a run's ``curves.png``;
* :mod:`~untapped.study.markdown`: ``report.md``;
* :mod:`~untapped.study.report`: the report written (:func:`~untapped.study.report.write_report`).
"""
