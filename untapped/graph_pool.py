"""The process-wide pool of compiled graphs that estimators no longer use.

What it caches: the :class:`untapped.graph.ModelGraph` (symbolic graph,
shared variables, compiled functions) of an :class:`untapped.model.SSDGM`
that was garbage-collected or dropped its graph. The graph is reset and kept
under the key of the hyperparameters it was built from (:func:`graph_key`). The next estimator
of that configuration (a ``clone`` in cross-validation, grid search or
scikit-learn's checks) takes it instead of building its own.

Why: building and compiling a graph costs seconds (the training step most),
an estimator's whole life in a quick ``fit``.

The pool is process-local state: :data:`POOL` is an empty dict and a lock
when this module is imported (nothing is built, compiled or changed
globally); its graphs are created on first use, by the estimators that
later give them back.
"""

import threading
from collections import OrderedDict

#: Hyperparameters a :class:`ModelGraph` does not depend on: the schedule
#: (``training.fit`` reads it; the learning rate is an input of the step) and
#: the sizes as given (the graph takes them resolved, :attr:`SSDGM.dims`).
NOT_IN_GRAPH = (
    "learning_rate", "anneal_lr_factor", "anneal_lr_epoch", "batch_size", "epochs", "eval_every", "n_features",
    "n_classes",
)  # fmt: skip


def graph_key(est):
    """What a :class:`ModelGraph` is built from: the other hyperparameters and the resolved sizes."""
    params = sorted((k, v) for k, v in est.get_params().items() if k not in NOT_IN_GRAPH)
    return repr((params, sorted(est.dims.items())))


class GraphPool:
    """Graphs of collected estimators, reset, for the next estimator of their configuration.

    Compiling the training step takes seconds; a ``clone`` (cross-validation,
    grid search, scikit-learn's checks) of a collected estimator reuses its
    compiled functions. At most ``size`` graphs are kept, the oldest dropped first.
    """

    def __init__(self, size):
        self.size = size
        self._free = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key):
        with self._lock:
            free = self._free.get(key)
            return free.pop() if free else None

    def give(self, key, graph):
        graph.reset()
        with self._lock:
            self._free.setdefault(key, []).append(graph)
            self._free.move_to_end(key)
            while sum(len(v) for v in self._free.values()) > self.size:
                oldest = next(iter(self._free))
                self._free[oldest].pop(0)
                if not self._free[oldest]:
                    del self._free[oldest]


POOL = GraphPool(size=4)
