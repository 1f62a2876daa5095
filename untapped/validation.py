"""Checks of what a user hands the estimator: float32, finite, of the model's widths, errors on one line."""

from collections import OrderedDict

import numpy as np
from sklearn.utils.validation import check_array

from untapped.backend import as_float32
from untapped.files import one_line
from untapped.paper import passes


def one_line_errors(function, *args, **kwargs):
    """``function(*args, **kwargs)`` with its ValueError or TypeError (scikit-learn's validation) on one line.

    scikit-learn's message for a 1-D or scalar array prints the array in
    full; that part is left out.
    """
    try:
        return function(*args, **kwargs)
    except ValueError as exc:
        message = one_line(exc)
        if message.startswith("Expected 2D array"):
            message = (
                message.split(":")[0]
                + ". Reshape your data: .reshape(1, -1) for a single row, .reshape(-1, 1) for a single column"
            )
        raise ValueError(message) from None
    except TypeError as exc:
        raise TypeError(one_line(exc)) from None


def validated(function, *args, names=("X",), **kwargs):
    """scikit-learn's ``check_array`` / ``validate_data`` to float32 (C order), errors on one line, then finite values.

    The finiteness check is ours, for one short message naming the first bad
    entry (None in an object array reads as NaN).
    """
    kwargs.update(dtype=np.float32, order="C", ensure_all_finite=False)
    result = one_line_errors(function, *args, **kwargs)
    arrays = result if isinstance(result, tuple) else (result,)
    check_finite(names[0], arrays[0])
    return result


def check_finite(name, array):
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} contains NaN or infinity (at row {row}, column {column}; None reads as NaN); "
            "the model needs finite values"
        )


def checked_matrix(name, array, width):
    """``array`` as a finite float32 matrix of ``width`` columns; one-line ValueError otherwise."""
    array = validated(check_array, array, names=(name,), input_name=name)
    if array.shape[1] != width:
        raise ValueError(f"{name} must have shape (rows, {width}), got {array.shape}")
    return array


def same_rows(**arrays):
    rows = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(rows.values())) != 1:
        raise ValueError(f"row counts differ: {rows}")


def check_batch(arrays, dims):
    """The five batch arrays as float32, in :data:`passes.BATCH` order, with their widths checked."""
    checked = OrderedDict()
    for name, width in passes.BATCH.items():
        if name not in arrays:
            raise ValueError(f"missing batch array {name!r}")
        array = as_float32(arrays[name])
        if array.ndim != 2 or array.shape[1] != dims[width]:
            raise ValueError(f"{name} must have shape (rows, {dims[width]}), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinity")
        checked[name] = array
    for source, first in (("labeled", "labeled_"), ("unfeatured", "unfeatured_")):
        rows = {checked[n].shape[0] for n in checked if n.startswith(first)}
        if len(rows) != 1:
            raise ValueError(f"the {source} arrays have different numbers of rows: {sorted(rows)}")
    return checked
