"""Figure 2 and the digits 5-9 cross-entropy metric (paper §3).

The paper judges a trained model in two ways on its "MNIST untapped" task,
where only digits 0-4 come with labels:

* **Figure 2, digit extraction.** Decode each of the 10 one-hot ``y`` at
  ``z_bar = mean(q(z | x_l, y_l))`` and look at the 10 images. Dimensions 0-4
  were told which digit they are; dimensions 5-9 must find their own.
* **Discriminative generalisation.** "We first generate canonical digits for
  5-9 by conditioning on each of the corresponding one-hots. We then use a
  logistic regression classifier pre-trained on the entire dataset to compute
  a probability distribution over digits for every image,
  p(digit = i | image). If j = argmax_i p(digit = i | image) is unique to a
  single dimension, we assign that dimension the digit j. We use the highest
  probability to split ties otherwise. To measure discriminative
  generalization, we simply permute y, and compute the cross-entropy over the
  predictions for digits 5-9." M2 scores 2.30 and untapped 2.07, averaged
  over 10 trials.

The original repository has no code for the metric, only an unused and
buggy helper ``assign_permutation`` (``DEMO_mnist2.py:23-49``); see
``docs/paper.md`` (*The digits 5-9 metric*) for the reconstruction followed here:
canonical images are the 10 Figure 2 images, the classifier scores all 10
of them (a 10 x 10 matrix), and the cross-entropy is the full 10-way one,
whose uniform baseline is ln 10 = 2.3026.

Everything in this package works on NumPy arrays; the model enters only
through the arrays it produced (canonical images, softmax outputs) so that
the metric can be computed for any implementation of the model.

The package, one concept per module:

* :mod:`~untapped.evaluation.assignment`: the digit of every dimension of y
  (:func:`assign_permutation`, the paper's procedure corrected;
  :func:`hungarian_permutation`; :data:`ASSIGNMENTS`) and
  :func:`permute_columns`;
* :mod:`~untapped.evaluation.metric`: :func:`cross_entropy`,
  :func:`accuracy` and :func:`discriminative_metric`;
* :mod:`~untapped.evaluation.readings`: the metric under each reading of
  the paper's text (:data:`READINGS`, :func:`metric_readings`, :data:`DERIVED`);
* :mod:`~untapped.evaluation.classifier`: the pre-trained digit classifier
  and its cache (:func:`digit_classifier`, :func:`default_cache_dir`);
* :mod:`~untapped.evaluation.figure`: Figure 2 (:func:`save_digit_grid`).

Every public name is importable from ``untapped.evaluation`` itself.
"""

from untapped.evaluation.assignment import (
    ASSIGNMENTS,
    HUNGARIAN_CLIP,
    assign_permutation,
    hungarian_permutation,
    permute_columns,
)
from untapped.evaluation.classifier import (
    CACHE_FORMAT,
    CLASSIFIER_SETTINGS,
    default_cache_dir,
    digit_classifier,
)
from untapped.evaluation.figure import save_digit_grid
from untapped.evaluation.metric import CE_CLIP, accuracy, cross_entropy, discriminative_metric
from untapped.evaluation.readings import (
    DERIVED,
    READINGS,
    UNSEEN,
    class_averaged_cross_entropy,
    metric_readings,
    renormalised_cross_entropy,
)

__all__ = [
    "ASSIGNMENTS",
    "CACHE_FORMAT",
    "CE_CLIP",
    "CLASSIFIER_SETTINGS",
    "DERIVED",
    "HUNGARIAN_CLIP",
    "READINGS",
    "UNSEEN",
    "accuracy",
    "assign_permutation",
    "class_averaged_cross_entropy",
    "cross_entropy",
    "default_cache_dir",
    "digit_classifier",
    "discriminative_metric",
    "hungarian_permutation",
    "metric_readings",
    "permute_columns",
    "renormalised_cross_entropy",
    "save_digit_grid",
]
