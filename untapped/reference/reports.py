"""What the command line prints: a comparison as a table and a summary, or as JSON; a bundle's layout.

The text of ``compare`` and its JSON are specified in
``docs/reference_format.md`` §9.
"""

import json
import math
from collections import OrderedDict

import h5py
import numpy as np

from untapped.reference.bundle import FORMAT, Bundle, attr_value, is_entries

#: The summary line names at most this many datasets per status, after a count per group.
SUMMARY_NAMES = 5
#: The columns of the comparison's table.
HEADER = ("dataset", "shape", "max abs err", "max rel err", "rtol", "atol", "used", "result")


# ---------------------------------------------------------------------------
# A comparison as text


def format_report(report, failures_only=False):
    """The comparison (a :func:`untapped.reference.compare` report) as a table and a summary line."""
    rows = [_table_row(r) for r in report["datasets"]
            if not (failures_only and r["status"] in ("pass", "not given"))]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(HEADER)]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [HEADER] + rows]
    out += [f"note: {note}" for note in report["notes"]]
    if report.get("hint"):
        out.append(f"hint: {report['hint']}")
    out.append(_summary(report))
    return "\n".join(out)


def _table_row(r):
    """One dataset's row of the table, as strings in :data:`HEADER` order."""
    shape = "x".join(str(n) for n in r.get("shape") or []) or ("scalar" if r.get("shape") == [] else "?")
    if r.get("form") == "entries":
        shape = f"{r.get('checked', '?')}/{r.get('size', '?')} entries"
    result = r["status"] + (f": {r['reason']}" if r.get("reason") else "")
    return (r["name"], shape, _fmt(r.get("max_abs_error")), _fmt(r.get("max_rel_error")), _fmt(r.get("rtol")),
            _fmt(r.get("atol")), _fmt_used(r.get("tolerance_used")), result)


def _summary(report):
    """``PASS: ...`` with what was not compared, or ``FAIL: ...`` with what differs, is missing or extra."""
    c = report["counts"]
    if report["passed"]:
        summary = f"PASS: all {c['passed']} compared datasets within tolerance"
        extras = []
        if c["not_given"]:
            extras.append(f"{c['not_given']} given arrays not in ACTUAL")
        if c["entries_only"]:
            extras.append(f"{c['entries_only']} gradients checked on given entries only")
        return summary + (f" ({'; '.join(extras)})" if extras else "")
    statuses = (("failed", "differ"), ("missing", "missing"), ("extra", "extra"))
    summary = "FAIL: " + "; ".join(_summary_part(what, report[key]) for key, what in statuses if report[key])
    if any(len(report[key]) > SUMMARY_NAMES for key, _ in statuses):
        summary += " (--json lists them all)"
    return summary


def _group_of(name):
    """The group a summary counts ``name`` in: its first path part, two for ``steps/<k>`` and ``edge/<section>``."""
    parts = name.split("/")
    return "/".join(parts[:2]) if parts[0] in ("steps", "edge") and len(parts) > 2 else parts[0]


def _summary_part(what, names):
    """``3 differ: a, b, c``; beyond :data:`SUMMARY_NAMES` names a count per group and the first few."""
    if len(names) <= SUMMARY_NAMES:
        return f"{len(names)} {what}: {', '.join(names)}"
    groups = OrderedDict()
    for name in names:
        groups[_group_of(name)] = groups.get(_group_of(name), 0) + 1
    counts = ", ".join(f"{group} {n}" for group, n in groups.items())
    shown = ", ".join(names[:SUMMARY_NAMES])
    return f"{len(names)} {what} ({counts}): {shown} and {len(names) - SUMMARY_NAMES} more"


def _fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    return f"{x:.2e}" if x else "0"


def _fmt_used(x):
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.2f}" if x < 100 else f"{x:.3g}"


# ---------------------------------------------------------------------------
# A comparison as JSON


def report_json(report):
    """The report as JSON text; non-finite numbers as the strings ``"inf"``, ``"-inf"``, ``"nan"``."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, float):
            return _json_number(value)
        return value

    return json.dumps(clean(report), indent=1)


def _json_number(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


# ---------------------------------------------------------------------------
# A bundle's layout


def describe(path):
    """The bundle's root attributes and its layout, as text."""
    with Bundle(path) as b:
        lines = [f"{b.path}: {FORMAT} version {b.attrs.get('format_version')}"]
        lines += [f"  @{key} = {_root_attr_text(value)}" for key, value in b.attrs.items()
                  if key not in ("format", "format_version")]
        lines.append("")
        lines += _layout(b.file, 0)
        lines += ["", f"{len(b.items)} datasets"]
        return "\n".join(lines)


def _root_attr_text(value):
    """A root attribute as text; JSON ones on one line with sorted keys."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            pass
    return str(value)


def _layout(group, depth):
    """One line per group (then its members, indented), dataset and entries group below ``group``."""
    lines, pad = [], "  " * depth
    for key, obj in group.items():
        if is_entries(obj):
            n = obj["value"].shape[0] if "value" in obj else "?"
            lines.append(f"{pad}{key}  entries ({n})")
        elif isinstance(obj, h5py.Group):
            extra = _attrs_text(obj.attrs)
            lines.append(f"{pad}{key}/" + (f"  {extra}" if extra else ""))
            lines += _layout(obj, depth + 1)
        else:
            shape = "x".join(str(n) for n in obj.shape) or "scalar"
            lines.append(f"{pad}{key}  {shape} {obj.dtype}  {_attrs_text(obj.attrs)}".rstrip())
    return lines


def _attrs_text(attrs):
    """``key=value`` for each attribute; arrays of more than 6 values as their count."""
    parts = []
    for key, value in attrs.items():
        value = attr_value(value)
        if isinstance(value, np.ndarray):
            value = f"[{value.size} values]" if value.size > 6 else value.tolist()
        elif isinstance(value, float):
            value = f"{value:.3g}"
        elif isinstance(value, (bool, np.bool_)):
            value = str(bool(value)).lower()
        parts.append(f"{key}={value}")
    return " ".join(parts)
