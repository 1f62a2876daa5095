"""Comparing a bundle ACTUAL with EXPECTED, dataset by dataset (``docs/reference_format.md`` §6, §9).

:func:`compare` returns a JSON-able report: one row per dataset (in
EXPECTED's order, then ACTUAL's extra ones), the names that failed, are
missing, extra or not given, and notes. :mod:`untapped.reference.reports`
turns it into text or JSON.
"""

import math
from collections import OrderedDict

import h5py
import numpy as np

from untapped.reference.bundle import FORMAT_VERSION, Bundle, BundleError, attr_value
from untapped.reference.tolerances import kind_of, tolerance

#: Root attributes whose difference ``compare`` notes without failing.
NOTED_ATTRS = ("model", "seed", "rows", "steps")


def compare(expected_path, actual_path):
    """Compare bundle ACTUAL against EXPECTED; returns a JSON-able report dict.

    Every dataset of EXPECTED is looked up in ACTUAL by name. Missing
    datasets fail unless their ``required`` attribute is false (the given
    data: inputs, noise, initial parameters); datasets in ACTUAL that
    EXPECTED lacks fail as extra. Shapes and dtypes must be equal, then
    values within EXPECTED's ``rtol`` / ``atol``. A gradient in ACTUAL may be a
    group of entries (``form='entries'``, datasets ``index`` and ``value``);
    only those entries are checked.
    """
    with Bundle(expected_path) as expected, Bundle(actual_path) as actual:
        _check_versions(expected, actual)
        rows = [_compare_name(name, expected, actual) for name in expected.items]
        rows += [_extra_row(name, actual.items[name]) for name in actual.items if name not in expected.items]
        notes = [f"{key}: expected {expected.attrs[key]!r}, actual {actual.attrs[key]!r}" for key in NOTED_ATTRS
                 if key in expected.attrs and key in actual.attrs and expected.attrs[key] != actual.attrs[key]]
        return _report(expected_path, actual_path, rows, len(expected.items), notes, actual.attrs.get("producer"))


def _report(expected_path, actual_path, rows, n_expected, notes, producer):
    """The report dict of :func:`compare` from its rows."""
    names = {status: [r["name"] for r in rows if r["status"] == status] for status in ("fail", "missing", "extra",
                                                                                       "not given")}
    failed, missing, extra = names["fail"], names["missing"], names["extra"]
    subsets = [r["name"] for r in rows if r.get("form") == "entries"]
    hint = None
    if extra and not failed and not missing:
        hint = (f"every difference is a dataset only ACTUAL has ({len(extra)}): are EXPECTED and ACTUAL swapped? "
                "untapped's bundle comes first")
    counts = OrderedDict(datasets=n_expected, passed=sum(r["status"] == "pass" for r in rows), failed=len(failed),
                         missing=len(missing), extra=len(extra), not_given=len(names["not given"]),
                         entries_only=len(subsets))
    return OrderedDict(
        expected=str(expected_path),
        actual=str(actual_path),
        passed=not (failed or missing or extra),
        counts=counts,
        failed=failed,
        missing=missing,
        extra=extra,
        not_given=names["not given"],
        entries_only=subsets,
        notes=notes,
        hint=hint,
        datasets=rows,
        actual_producer=producer,
    )


def _check_versions(expected, actual):
    """Two bundles of different format versions cannot be compared dataset by dataset: say what would do."""
    e, a = expected.attrs.get("format_version"), actual.attrs.get("format_version")
    if e == a:
        return
    if e == 1:
        need = (f"EXPECTED is version 1 (no edge/ section) and ACTUAL version {a}: "
                f"export EXPECTED again with this untapped (version {FORMAT_VERSION})")
    else:
        need = (f"EXPECTED is version {e} and ACTUAL version {a}: ACTUAL needs format_version {e} and the edge/ "
                f"section (docs/reference_format.md §7.7-7.8), or compare it with a version-{a} EXPECTED")
    raise BundleError(f"{actual.path}: {need}")


# ---------------------------------------------------------------------------
# One row per dataset


def _compare_name(name, expected_bundle, actual_bundle):
    """The row of EXPECTED's dataset ``name``: compared, or missing / not given if ACTUAL lacks it."""
    if name in actual_bundle.items:
        return _compare_item(name, expected_bundle, actual_bundle)
    item = expected_bundle.items[name]
    required = _stored_tolerance(item, name, np.zeros(0)).get("required", True)
    return OrderedDict(name=name, status="missing" if required else "not given", shape=list(item.shape),
                       dtype=str(item.dtype))


def _extra_row(name, item):
    shape = list(item.shape) if isinstance(item, h5py.Dataset) else None
    return OrderedDict(name=name, status="extra", shape=shape)


def _compare_item(name, expected_bundle, actual_bundle):
    e_item, a_item = expected_bundle.items[name], actual_bundle.items[name]
    row = OrderedDict(name=name)
    if isinstance(e_item, h5py.Group):
        raise BundleError(f"{expected_bundle.path}: {name} is a group of entries; EXPECTED must hold full arrays "
                             "(are EXPECTED and ACTUAL swapped? untapped's bundle comes first)")
    expected = expected_bundle.read(name)
    tol = _stored_tolerance(e_item, name, expected)
    row.update(kind=tol["kind"], rtol=tol["rtol"], atol=tol["atol"])
    row.update(shape=list(expected.shape), dtype=str(expected.dtype), size=int(expected.size))
    if isinstance(a_item, h5py.Group):
        return _compare_entries(row, name, expected, actual_bundle, tol)
    actual = actual_bundle.read(name)
    row.update(actual_shape=list(actual.shape), actual_dtype=str(actual.dtype))
    if actual.shape != expected.shape:
        return dict(row, status="fail", reason=f"shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if not _same_dtype(actual.dtype, expected.dtype):
        return dict(row, status="fail", reason=f"dtype {actual.dtype}, expected {expected.dtype}")
    max_abs, max_rel, used, bad, worst = _errors(actual, expected, tol["rtol"], tol["atol"])
    row.update(max_abs_error=max_abs, max_rel_error=max_rel, tolerance_used=used, mismatches=bad,
               checked=int(expected.size))
    if worst is not None:
        _worst(row, worst, np.unravel_index(worst, expected.shape), expected.reshape(-1), actual.reshape(-1))
    if bad:
        return dict(row, status="fail",
                    reason=f"{bad} of {expected.size} entries outside tolerance, {_worst_text(row)}")
    return dict(row, status="pass")


def _compare_entries(row, name, expected, actual_bundle, tol):
    """ACTUAL holds a subset of entries of a gradient: ``index`` (n, ndim) and ``value`` (n,)."""
    if tol["kind"] != "gradient":
        return dict(row, status="fail", reason="only gradients may be given as entries")
    index, value = actual_bundle.read(name)
    row.update(actual_shape=[int(n) for n in value.shape], actual_dtype=str(value.dtype), form="entries")
    n = value.shape[0] if value.ndim == 1 else -1
    if n < 1 or index.shape != (n, expected.ndim) or not np.issubdtype(index.dtype, np.integer):
        return dict(
            row, status="fail", reason=f"entries need index (n, {expected.ndim}) integers and value (n,), n >= 1; "
            f"got index {index.shape} {index.dtype}, value {value.shape}"
        )
    if not _same_dtype(value.dtype, expected.dtype):
        return dict(row, status="fail", reason=f"dtype {value.dtype}, expected {expected.dtype}")
    if (index < 0).any() or (index >= np.array(expected.shape)).any():
        return dict(row, status="fail", reason=f"entry index out of range for shape {expected.shape}")
    picked = expected[tuple(index.T)]
    max_abs, max_rel, used, bad, worst = _errors(value, picked, tol["rtol"], tol["atol"])
    row.update(max_abs_error=max_abs, max_rel_error=max_rel, tolerance_used=used, mismatches=bad, checked=int(n))
    if worst is not None:
        row["worst_entry"] = worst
        _worst(row, worst, index[worst], picked, value)
    if bad:
        return dict(row, status="fail", reason=f"{bad} of {n} given entries outside tolerance, "
                    f"{_worst_text(row, entry=row['worst_entry'])}")
    return dict(row, status="pass")


def _worst(row, worst, index, expected, actual):
    """Add the worst entry to ``row``: its index in EXPECTED's array and both values."""
    row.update(worst_index=[int(i) for i in index], worst_expected=float(expected[worst]),
               worst_actual=float(actual[worst]))


def _worst_text(row, entry=None):
    """``worst at [i, j] (actual A, expected E)``; for gradient entries, which given entry it is."""
    where = "[" + ", ".join(str(i) for i in row["worst_index"]) + "]"
    which = f"worst: given entry {entry}, at {where}" if entry is not None else f"worst at {where}"
    return f"{which} (actual {row['worst_actual']:.7g}, expected {row['worst_expected']:.7g})"


def _same_dtype(a, b):
    """Equal dtypes up to byte order (float32 is float32, big or little endian)."""
    return a.newbyteorder("=") == b.newbyteorder("=")


def _stored_tolerance(item, name, expected):
    """EXPECTED's tolerance attributes, or the policy's defaults where it has none."""
    keys = ("kind", "rtol", "atol", "required")
    if all(key in item.attrs for key in keys):
        out = {key: attr_value(item.attrs[key]) for key in keys}
    else:
        unknown = dict(kind="unknown", rtol=0.0, atol=0.0, required=True)
        out = dict(tolerance(name, expected) if kind_of(name) else unknown)
        for key in keys:
            if key in item.attrs:
                out[key] = attr_value(item.attrs[key])
    out["rtol"], out["atol"], out["required"] = float(out["rtol"]), float(out["atol"]), bool(out["required"])
    return out


# ---------------------------------------------------------------------------
# The errors of one array


def _errors(actual, expected, rtol, atol):
    """``(max_abs, max_rel, used, mismatches, worst)`` of actual against expected (float64 arithmetic, §6.1).

    ``used`` is the largest ``|actual - expected| / (atol + rtol |expected|)``:
    the fraction of its tolerance the worst entry uses (> 1 fails). An entry
    that is NaN on one side only has error NaN, an infinity that does not
    match error inf; NaN counts as the worst, so ``max_abs`` and ``used`` are
    NaN if any such entry exists. ``worst`` is the flat index of the entry
    with the largest ``used`` (None when every entry agrees).
    """
    if actual.dtype == expected.dtype and actual.shape == expected.shape and actual.tobytes() == expected.tobytes():
        return 0.0, 0.0, 0.0, 0, None  # the same bits (the common case when comparing two exports)
    a = np.asarray(actual, dtype=np.float64).reshape(-1)
    e = np.asarray(expected, dtype=np.float64).reshape(-1)
    allowed = atol + rtol * np.abs(e)
    with np.errstate(invalid="ignore"):
        err = np.abs(a - e)
    if atol > 0 and np.isfinite(err).all():  # the common case: no NaN, infinity or zero tolerance to rule on
        return _finite_errors(err, e, allowed)
    return _general_errors(a, e, allowed)


def _finite_errors(err, e, allowed):
    """:func:`_errors` where every error is finite and every entry has a tolerance above 0."""
    used = err / allowed
    bad = int((err > allowed).sum())
    max_abs, max_rel = _max_errors(err, e)
    worst = int(np.argmax(used)) if max_abs > 0 else None
    return max_abs, max_rel, float(used.max()) if used.size else 0.0, bad, worst


def _general_errors(a, e, allowed):
    """:func:`_errors` with NaN, infinities or zero tolerances to rule on."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        agree = (a == e) | (np.isnan(a) & np.isnan(e))
        err = np.where(agree, 0.0, np.abs(a - e))
        # NaN on one side only: NaN; inf against a finite number or the other inf: inf
        err = np.where(~agree & (np.isnan(a) | np.isnan(e)), np.nan, np.where(~agree & np.isnan(err), np.inf, err))
        bad = ~agree & ~(err <= allowed)
        used = np.where(err == 0, 0.0, err / np.where(allowed > 0, allowed, 1.0))
        used = np.where((err > 0) & ~(allowed > 0), np.inf, used)
    nan = np.isnan(err)
    if not err.size or not bad.any() and not used.any():
        worst = None
    else:
        worst = int(np.flatnonzero(nan)[0]) if nan.any() else int(np.argmax(used))
    if nan.any():
        return math.nan, math.nan, math.nan, int(bad.sum()), worst
    max_abs, max_rel = _max_errors(err, e)
    return max_abs, max_rel, float(used.max()) if used.size else 0.0, int(bad.sum()), worst


def _max_errors(err, e):
    """The largest absolute error, and the largest relative one over finite non-zero expected entries."""
    nonzero = (e != 0) & np.isfinite(e)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = err[nonzero] / np.abs(e[nonzero])
    max_abs = float(err.max()) if err.size else 0.0
    max_rel = float(rel.max()) if rel.size else (0.0 if max_abs == 0 else math.inf)
    return max_abs, max_rel
