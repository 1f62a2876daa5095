"""A run's ``metrics.json`` as the summary and the report read it: an untapped run's, another tool's, or damaged.

A results folder may hold folders that other tools wrote, with a
``metrics.json`` of their own, and a file can be edited or damaged by hand.
:func:`check_metrics` tells them apart: a JSON object whose ``model`` is one
of :data:`untapped.presets.MODELS` is an untapped run's, and it must then
hold every field the summary and the report use, of the right type; anything
else is not an untapped run's. Readers skip both kinds with a one-line note
(:class:`MetricsProblem`) instead of failing on the first odd file.
"""

import json
import math
import pathlib

from untapped.presets import MODELS, VARIANTS


class MetricsProblem(Exception):
    """A ``metrics.json`` that is not a finished untapped run's; ``damaged`` says whether it claims to be one."""

    def __init__(self, path, reason, damaged):
        self.path, self.reason, self.damaged = path, reason, damaged
        super().__init__(self.said(path))

    def said(self, name):
        """The problem, one line, with the file called ``name``."""
        what = "a damaged untapped run" if self.damaged else "not an untapped run's metrics"
        return f"{name}: {what} ({self.reason})"


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _digits(value):
    return isinstance(value, list) and len(value) == 10 and all(_count(d) and d < 10 for d in value)


#: The fields of an untapped run's metrics the summary and the report read, and what each must be.
FIELDS = {
    "seed": (_count, "a whole number >= 0"),
    "epochs": (_count, "a whole number >= 0"),
    "cross_entropy": (_number, "a finite number"),
    "accuracy": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "recognised": (_digits, "ten digits 0-9"),
    "labels": (_digits, "ten digits 0-9"),
}


def check_metrics(metrics, path="metrics.json"):
    """Return ``metrics`` if it is a finished untapped run's (see the module); else raise :class:`MetricsProblem`."""
    if not isinstance(metrics, dict):
        raise MetricsProblem(path, f"a JSON {type(metrics).__name__}, not an object", damaged=False)
    if metrics.get("model") not in MODELS:
        found = "no 'model'" if "model" not in metrics else f"model {metrics['model']!r}"
        raise MetricsProblem(path, f"{found}, not one of {', '.join(MODELS)}", damaged=False)
    for name, (valid, expected) in FIELDS.items():
        if name not in metrics:
            raise MetricsProblem(path, f"no {name!r}", damaged=True)
        if not valid(metrics[name]):
            raise MetricsProblem(path, f"{name} is {json.dumps(metrics[name])}, not {expected}", damaged=True)
    variant = metrics.get("variant", "code")
    if variant not in VARIANTS:
        raise MetricsProblem(path, f"variant {json.dumps(variant)} is not one of {', '.join(VARIANTS)}", damaged=True)
    readings = metrics.get("readings", {})
    if not isinstance(readings, dict) or not all(
        isinstance(v, dict) and _number(v.get("cross_entropy")) and _number(v.get("accuracy"))
        for v in readings.values()
    ):
        raise MetricsProblem(path, "its readings are not each a finite cross_entropy and accuracy", damaged=True)
    return metrics


def read_metrics(path):
    """The checked content of the ``metrics.json`` at ``path`` (:func:`check_metrics`); :class:`MetricsProblem` if
    unusable."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MetricsProblem(path, f"cannot be read: {exc.strerror or exc}", damaged=False) from None
    try:
        metrics = json.loads(text)
    except ValueError:
        raise MetricsProblem(path, "not valid JSON", damaged=False) from None
    return check_metrics(metrics, path)
