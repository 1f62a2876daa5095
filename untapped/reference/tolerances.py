"""The tolerance policy (``docs/reference_format.md`` §6): the kind of every dataset name, and its tolerances.

A value passes when ``|actual - expected| <= atol + rtol * |expected|``,
entry by entry (NaN equals NaN; infinities must match exactly). Each dataset
name has a *kind* (:func:`kind_of`); the kind sets its ``rtol`` and ``atol``
(:data:`TOLERANCES`), and whether a port's bundle must contain it.
"""

import math
from collections import OrderedDict

import numpy as np

from untapped.reference.bundle import BundleError

#: kind -> (rtol, atol, atol is a multiple of max|expected|, required in ACTUAL).
TOLERANCES = OrderedDict(
    # Data a port reads: optional in a port's bundle; when present, equal to
    # 1e-6. A port writes back what it read, exactly; two untapped exports in
    # different compile modes (c, plain) differ in the few Bernoulli uniforms
    # moved BERNOULLI_MARGIN away from the decoder means, by those means'
    # float32 rounding (~1e-7), which cannot flip a sample.
    given=(0.0, 1e-6, False, False),
    # Bernoulli samples: exact. The noise keeps every uniform >= BERNOULLI_MARGIN
    # from its mean, so only a wrong mean (not rounding) can flip a sample.
    sample=(0.0, 0.0, False, True),
    # Adam's step count.
    counter=(0.0, 0.0, False, True),
    # Forward intermediates: float32 reassociation. Entries near zero come out of
    # cancellations of O(max) operands, hence an absolute part scaled by the array.
    forward=(1e-5, 1e-5, True, True),
    # The five terms, the total, and each step's total. A total's atol is scaled by its parts (:func:`tolerance`).
    loss=(1e-5, 1e-5, False, True),
    # Gradients: longer chains of float32 rounding, cancellation within sums.
    gradient=(1e-4, 1e-5, True, True),
    # Parameters after optimiser steps.
    param=(1e-4, 1e-5, False, True),
    # Adam's moments: m is linear in the gradient, v quadratic (a float64
    # ``1 - beta2`` instead of §7.6's float32 one alone moves v by 1.3e-5 relative).
    moment=(1e-4, 1e-5, True, True),
)
#: The smallest absolute tolerance of the scaled kinds (for all-zero arrays).
ATOL_FLOOR = 1e-12

#: The edge sections whose datasets have the kind of the same name outside ``edge/`` (§7.7).
_EDGE_AS_MAIN = ("inputs", "noise", "forward", "terms", "gradients")


def kind_of(name):
    """The tolerance kind (a key of :data:`TOLERANCES`) of the dataset ``name``, or None if unknown.

    ``edge/<name>`` has the kind of ``<name>`` (§7.7), except the given
    ``edge/params/`` and ``edge/updates/<case>/gradients/``; an update case's
    ``params`` and ``adam`` are those of an optimiser step (§7.8).
    """
    parts = name.split("/")
    if parts[0] == "edge":
        return _edge_kind(name, parts)
    if parts[0] == "steps":
        return _step_kind(parts)
    if parts[0] in ("inputs", "noise") or name.startswith("params/initial/"):
        return "given"
    if parts[0] == "forward" and len(parts) == 3:
        return "sample" if parts[2] == "x_sample" else "forward"
    if parts[0] == "terms" or name == "total":
        return "loss"
    if parts[0] == "gradients":
        return "gradient"
    return None


def _edge_kind(name, parts):
    """The kind of ``edge/...``: that of the same name outside it, of a step's, or given."""
    if name == "edge/total":
        return "loss"
    section = parts[1] if len(parts) >= 3 else None
    if section == "params":
        return "given"
    if section == "updates" and len(parts) >= 5:
        if parts[3] == "gradients":
            return "given"
        return _step_kind(["steps", "k"] + parts[3:]) if parts[3] in ("params", "adam") else None
    if section in _EDGE_AS_MAIN:
        return kind_of("/".join(parts[1:]))
    return None


def _step_kind(parts):
    """The kind of ``steps/<k>/...`` (``parts`` split at the slashes)."""
    if len(parts) < 3:
        return None
    section = parts[2]
    if section == "noise":
        return "given"
    if section == "total" and len(parts) == 3:
        return "loss"
    if section == "gradients":
        return "gradient"
    if section == "params":
        return "param"
    if section == "adam":
        if parts[3:] == ["t"]:
            return "counter"
        if len(parts) > 4 and parts[3] in ("m", "v"):
            return "moment"
    return None


def is_total(name):
    """Whether ``name`` is a weighted total of the terms: ``total``, ``edge/total`` or ``steps/<k>/total``."""
    parts = name.split("/")
    return name in ("total", "edge/total") or (len(parts) == 3 and parts[0] == "steps" and parts[2] == "total")


def total_parts(terms, coefficients):
    """The size of a total's parts: ``sum_t |c_t term_t|`` over ``terms`` (term name -> value)."""
    return float(sum(abs(float(coefficients.get(t, 0.0)) * float(v)) for t, v in terms.items()))


def tolerance(name, expected, parts=None):
    """``{'kind', 'rtol', 'atol', 'required'}`` for dataset ``name`` with expected values ``expected``.

    ``parts``, for a total (:func:`is_total`), is the size of the weighted
    terms it sums (:func:`total_parts`): its atol is ``1e-5 * max(1, parts)``.
    The reverse bound is about minus the unlabeled one, so a total of 1
    can be the sum of weighted terms of 50, and carries their rounding.
    """
    kind = kind_of(name)
    if kind is None:
        raise BundleError(f"{name}: not a dataset of the reference format")
    rtol, atol, scaled, required = TOLERANCES[kind]
    if scaled:
        values = np.abs(np.asarray(expected, dtype=np.float64))
        finite = values[np.isfinite(values)]
        atol = max(ATOL_FLOOR, atol * float(finite.max())) if finite.size else ATOL_FLOOR
    elif parts is not None and is_total(name) and math.isfinite(parts):
        atol = atol * max(1.0, parts)
    return dict(kind=kind, rtol=float(rtol), atol=float(atol), required=int(required))
