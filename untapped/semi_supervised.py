"""What ``SSDGM.fit`` trains on: a split, or arrays in scikit-learn's semi-supervised convention.

The three sources of Alg. 1 (paper §2): labeled rows (x_l, y_l), unlabeled
rows x_u and unfeatured labels y with their z. The experiment hands
``fit`` a split that holds them (:func:`is_split`); ``fit(X, y)`` with
``y = -1`` on unlabeled rows is turned into them here
(:func:`semi_supervised_data`), after its checks.
"""

import numbers
import warnings

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from untapped.data import UNFEATURED_Z_BOX, close_corners
from untapped.validation import checked_matrix, one_line_errors, same_rows, validated

#: What ``fit`` needs of a split (the experiment's path) rather than arrays.
SPLIT_ATTRIBUTES = ("labeled_x", "labeled_y", "unlabeled_x", "unfeatured_y", "unfeatured_z")


def is_split(X):
    return all(hasattr(X, name) for name in SPLIT_ATTRIBUTES)


class _SemiSupervisedData:
    """The training sources of ``fit(X, y)``, as :func:`untapped.training.fit` reads a split (no evaluation sources)."""

    def __init__(self, **arrays):
        self.__dict__.update(arrays)


def _unlabeled(y):
    """The rows of ``y`` marked unlabeled (``-1``)."""
    if y.dtype.kind in "biuf":
        return y == -1
    return np.array([isinstance(v, numbers.Real) and not isinstance(v, bool) and v == -1 for v in y], dtype=bool)


def semi_supervised_data(estimator, X, y, classes, unfeatured_y, unfeatured_z):
    """Validate ``estimator.fit(X, y)``'s inputs; set its ``classes_`` and ``n_features_in_``; return the
    training sources."""
    name = type(estimator).__name__
    if X is None:
        raise ValueError(
            f"{name}.fit needs X (an array of rows) and y (labels, -1 for unlabeled rows), or a split; got X=None"
        )
    if y is None:
        raise ValueError(f"{name} requires y to be passed, but the target y is None (labels, -1 for unlabeled rows)")
    X, y = validated(validate_data, estimator, X, y)
    if y.dtype == object and any(v is None for v in y):
        raise ValueError("y contains None; mark unlabeled rows with -1")
    unlabeled = _unlabeled(y)
    labels = y[~unlabeled]
    if not len(labels):
        raise ValueError("y has no labeled row (every entry is -1); the model needs labeled rows")
    one_line_errors(check_classification_targets, labels)
    classes_ = np.unique(labels if classes is None else np.asarray(classes))
    unknown = np.setdiff1d(labels, classes_)
    if len(unknown):
        raise ValueError(f"y has labels not in classes: {', '.join(map(str, unknown[:5]))}")
    if len(classes_) < 2:
        raise ValueError(f"y has only {len(classes_)} class; {name} needs at least 2 (pass classes= with all labels)")
    if estimator.n_classes is not None and len(classes_) != estimator.n_classes:
        raise ValueError(
            f"y has {len(classes_)} classes, the model n_classes={estimator.n_classes}: pass classes= with all "
            f"{estimator.n_classes} labels (those without labeled rows are learned from the unfeatured set), "
            "or set n_classes=None to take them from y"
        )
    if estimator.n_features is not None and X.shape[1] != estimator.n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, the model n_features={estimator.n_features} "
            "(set n_features=None to take it from X)"
        )
    if X.min() < 0 or X.max() > 1:
        warnings.warn(
            f"X has values in [{X.min():.3g}, {X.max():.3g}]: the decoder is a Bernoulli likelihood of "
            "intensities in [0, 1]; scale X (for instance with MinMaxScaler)",
            UserWarning,
            stacklevel=3,
        )
    estimator.classes_ = classes_
    n_classes = len(classes_)
    if unfeatured_y is None:
        if unfeatured_z is not None:
            raise ValueError("unfeatured_z needs its unfeatured_y")
        unfeatured_y = close_corners(n_classes)
    unfeatured_y = checked_matrix("unfeatured_y", unfeatured_y, n_classes)
    if estimator.reverse_y_density == "concrete" and estimator.coeff_reverse_elbo != 0 and (unfeatured_y <= 0).any():
        raise ValueError(
            "unfeatured_y has entries <= 0, where the Concrete density of the reverse bound is not finite; "
            "use soft labels (untapped.data.close_corners) or reverse_y_density='categorical'"
        )
    if unfeatured_z is None:
        rng = np.random.default_rng(estimator.seed)
        unfeatured_z = rng.uniform(*UNFEATURED_Z_BOX, size=(len(unfeatured_y), estimator.n_latent)).astype(np.float32)
    unfeatured_z = checked_matrix("unfeatured_z", unfeatured_z, estimator.n_latent)
    same_rows(unfeatured_y=unfeatured_y, unfeatured_z=unfeatured_z)
    one_hot = np.eye(n_classes, dtype=np.float32)[np.searchsorted(classes_, labels)]
    return _SemiSupervisedData(
        labeled_x=X[~unlabeled],
        labeled_y=one_hot,
        unlabeled_x=X[unlabeled] if unlabeled.any() else X,
        unfeatured_y=unfeatured_y,
        unfeatured_z=unfeatured_z,
    )
