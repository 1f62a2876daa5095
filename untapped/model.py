"""The estimator :class:`SSDGM`: hyperparameters, data checks and the scikit-learn API around one graph.

The graph and its compiled functions are :class:`untapped.graph.ModelGraph`,
built on first use (or taken from the pool of collected estimators' graphs,
:mod:`untapped.graph_pool`). What ``fit`` trains on is prepared by
:mod:`untapped.semi_supervised`.
"""

import weakref
from collections import OrderedDict

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data

from untapped import presets
from untapped.backend import DEFAULT_MODE, as_float32
from untapped.graph import ModelGraph, set_checked
from untapped.graph_pool import POOL, graph_key
from untapped.paper import passes, samplers
from untapped.semi_supervised import is_split, semi_supervised_data
from untapped.validation import (
    check_batch,
    checked_matrix,
    same_rows,
    validated,
)


class SSDGM(ClassifierMixin, BaseEstimator):
    """Semi-supervised deep generative model with the reverse ("untapped") bound.

    Hyperparameters only; nothing is built until first use. Defaults are the
    original code's MNIST configuration (``DEMO_mnist.py:50-92``), stated in
    :mod:`untapped.presets`; ``m2()`` / ``from_preset('m2')`` give the M2
    baseline (reverse bound off).

    A scikit-learn classifier in the ``sklearn.semi_supervised`` convention:
    ``fit(X, y)`` with ``y = -1`` on unlabeled rows, then ``predict``,
    ``predict_proba``, ``score``; and a generative model: ``encode``,
    ``generate``. ``fit(split)`` is the experiment's path
    (:func:`untapped.training.fit`).

    Parameters
    ----------
    n_features, n_classes, n_latent : sizes of x, y and z (``presets.N_FEATURES`` ...).
        ``n_features=None`` / ``n_classes=None`` take them from the data of
        ``fit`` (the width of X, the number of classes).
    classifier_hidden, encoder_hidden, decoder_hidden : tanh hidden layer sizes.
    concrete_temperature : tau of the Concrete distribution (1, as coded).
    z_low, z_high : the box of the logistic flow ((-pi/2, pi/2), as coded;
        the paper's is (-1.5, 1.5)).
    exact_flow_log_det : exact log-det instead of the original's 1e-5-guarded one.
    reverse_elbo_variant : 'code' (eq. 17 without log q(z|x,y), as coded) or
        'eq17' (with it, as printed).
    unfeatured_z : 'fixed' (each unfeatured y keeps the z of its row of the
        split, as coded) or 'prior' (the training step pairs every unfeatured
        row with a fresh z ~ U(-1.5, 1.5)^2 = p(z), Alg. 1; evaluation keeps
        the split's second draw).
    reverse_y_density : 'concrete' (the original) or 'categorical' (log
        Cat(y; softmax(l(x^))), which one-hot unfeatured y need).
    coeff_<term> : the weight of each term in the total (``presets.TERMS``;
        ``presets.PRESETS`` holds each model's).
    learning_rate, anneal_lr_factor, anneal_lr_epoch : lr 0.01, times 0.9995
        per epoch from epoch 500.
    max_norm, clip_grad : total-norm rescale, then elementwise clip.
    adam_beta1, adam_beta2, adam_epsilon : Adam as Lasagne's master computes
        it (epsilon on the uncorrected sqrt(v); :func:`untapped.updates.adam`).
    batch_size, epochs, eval_every : the training schedule (``training.fit``).
    seed : initial weights (``RandomState(seed)``, as the original), noise
        generators and data shuffles (:mod:`untapped.streams`).
    mode : 'c' (PyTensor's C backend with the fast kernels, default), 'plain'
        (the paper layer in stock PyTensor ops, C backend) or 'numba'
        (``presets.MODES``; ``docs/architecture.md``).

    Attributes
    ----------
    classes_ : the class labels, in the order of ``predict_proba``'s columns.
    n_features_in_ : the width of X.
    history_, epoch_, checkpoint_, compile_seconds_ : the last training run
        (:func:`untapped.training.fit`).
    graph_ : the :class:`ModelGraph` (built on first use; not pickled, its
        parameters, optimiser and generator states are).
    """

    def __init__(
        self,
        n_features=presets.N_FEATURES,
        n_classes=presets.N_CLASSES,
        n_latent=presets.N_LATENT,
        classifier_hidden=presets.CLASSIFIER_HIDDEN,
        encoder_hidden=presets.ENCODER_HIDDEN,
        decoder_hidden=presets.DECODER_HIDDEN,
        concrete_temperature=1.0,
        z_low=-np.pi / 2,
        z_high=np.pi / 2,
        exact_flow_log_det=False,
        reverse_elbo_variant="code",
        unfeatured_z="fixed",
        reverse_y_density="concrete",
        coeff_labeled_elbo=presets.CODE_COEFFICIENTS["labeled_elbo"],
        coeff_unlabeled_elbo=presets.CODE_COEFFICIENTS["unlabeled_elbo"],
        coeff_reverse_elbo=presets.CODE_COEFFICIENTS["reverse_elbo"],
        coeff_x_to_y_loss=presets.CODE_COEFFICIENTS["x_to_y_loss"],
        coeff_y_to_x_loss=presets.CODE_COEFFICIENTS["y_to_x_loss"],
        learning_rate=0.01,
        anneal_lr_factor=0.9995,
        anneal_lr_epoch=500,
        max_norm=5.0,
        clip_grad=1.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-4,
        batch_size=presets.BATCH_SIZE,
        epochs=presets.EPOCHS,
        eval_every=presets.EVAL_EVERY,
        seed=presets.DEFAULT_SEED,
        mode=DEFAULT_MODE,
    ):
        self.n_features = n_features
        self.n_classes = n_classes
        self.n_latent = n_latent
        self.classifier_hidden = classifier_hidden
        self.encoder_hidden = encoder_hidden
        self.decoder_hidden = decoder_hidden
        self.concrete_temperature = concrete_temperature
        self.z_low = z_low
        self.z_high = z_high
        self.exact_flow_log_det = exact_flow_log_det
        self.reverse_elbo_variant = reverse_elbo_variant
        self.unfeatured_z = unfeatured_z
        self.reverse_y_density = reverse_y_density
        self.coeff_labeled_elbo = coeff_labeled_elbo
        self.coeff_unlabeled_elbo = coeff_unlabeled_elbo
        self.coeff_reverse_elbo = coeff_reverse_elbo
        self.coeff_x_to_y_loss = coeff_x_to_y_loss
        self.coeff_y_to_x_loss = coeff_y_to_x_loss
        self.learning_rate = learning_rate
        self.anneal_lr_factor = anneal_lr_factor
        self.anneal_lr_epoch = anneal_lr_epoch
        self.max_norm = max_norm
        self.clip_grad = clip_grad
        self.adam_beta1 = adam_beta1
        self.adam_beta2 = adam_beta2
        self.adam_epsilon = adam_epsilon
        self.batch_size = batch_size
        self.epochs = epochs
        self.eval_every = eval_every
        self.seed = seed
        self.mode = mode

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_preset(cls, name, **params):
        """``SSDGM`` with the coefficients of preset ``name`` ('untapped' or 'm2'), then ``params``."""
        return cls(**{**presets.preset_params(name), **params})

    @classmethod
    def m2(cls, **params):
        """Kingma et al.'s M2: the same model without the reverse bound (the y->x loss stays, as in the original)."""
        return cls.from_preset("m2", **params)

    def set_params(self, **params):
        """Set hyperparameters (scikit-learn API).

        The graph is rebuilt on next use, so the weights start again from
        ``seed`` and the model is no longer fitted: save them first if needed.
        """
        super().set_params(**params)
        self._drop_graph()
        return self

    @property
    def graph(self):
        """The :class:`ModelGraph` of the current hyperparameters, built (or taken from the pool) on first access."""
        if "graph_" not in self.__dict__:
            key = graph_key(self)
            graph = POOL.take(key) or ModelGraph(self)
            pending = self.__dict__.pop("_pending_state", None)
            if pending is not None:
                graph.set_state(pending)
            self.graph_ = graph
            # When this estimator is collected (or drops the graph), the graph
            # goes back to the pool, for the next estimator of this configuration.
            self._graph_release = weakref.finalize(self, POOL.give, key, graph)
            self._graph_release.atexit = False
        return self.graph_

    def _drop_graph(self):
        release = self.__dict__.pop("_graph_release", None)
        if release is not None:
            release()
        self.__dict__.pop("graph_", None)
        self.__dict__.pop("_pending_state", None)

    def free_graph(self):
        """Free the graph now, and do not pool it: its compiled functions, their buffers and the training data.

        The model keeps its state (parameters, Adam, generators; as
        pickling does) and builds a new graph with it on next use. For code
        that trains one model after another in a process, as
        :func:`untapped.experiment.run_trial` does: a run's graph is not
        reused (the next run has another seed or model), so pooling it
        (:class:`untapped.graph_pool.GraphPool`) would only keep its
        memory. The training step's buffers and the data go at once; the
        graph's objects when Python's cyclic garbage collector next runs.
        """
        release = self.__dict__.pop("_graph_release", None)
        if release is not None:
            release.detach()
        graph = self.__dict__.pop("graph_", None)
        if graph is not None:
            self._pending_state = graph.state()
            graph.reset()

    def __sklearn_is_fitted__(self):
        """Fitted once training data were set (as ``training.fit`` begins) or parameters set; not after
        ``set_params``."""
        if "graph_" in self.__dict__:
            return self.graph_.fitted
        return bool(self.__dict__.get("_pending_state", {}).get("fitted"))

    def __getstate__(self):
        # The compiled graph does not pickle; its state does, and the graph is
        # rebuilt (functions compiled on use) by the unpickled model.
        state = super().__getstate__()
        graph = state.pop("graph_", None)
        state.pop("_graph_release", None)
        if graph is not None:
            state["_pending_state"] = graph.state()
        return state

    def __setstate__(self, state):
        # Estimators pickled before two coefficients were renamed.
        self.__dict__.update(presets.upgrade_params(state))

    @property
    def coefficients(self):
        """Term name -> weight in the total, in :data:`untapped.presets.TERMS` order."""
        return OrderedDict((term, getattr(self, presets.coefficient_param(term))) for term in presets.TERMS)

    def coefficient_params(self):
        """The ``coeff_*`` hyperparameters and their values (the weights of :attr:`coefficients`)."""
        return OrderedDict((k, v) for k, v in self.get_params().items() if k.startswith("coeff_"))

    @property
    def dims(self):
        """The sizes of x, y and z; ``None`` hyperparameters resolved from the data of the last fit."""
        n_features, n_classes = self.n_features, self.n_classes
        if n_features is None:
            n_features = self.__dict__.get("n_features_in_")
        if n_classes is None and "classes_" in self.__dict__:
            n_classes = len(self.classes_)
        if n_features is None or n_classes is None:
            raise NotFittedError(
                f"{type(self).__name__} takes n_features=None / n_classes=None from the data of fit; fit it first"
            )
        return dict(n_features=int(n_features), n_classes=int(n_classes), n_latent=int(self.n_latent))

    # -- parameters -----------------------------------------------------------

    @property
    def param_names(self):
        return self.graph.networks.param_names

    def get_param_values(self):
        """The 20 parameter arrays in Lasagne's order (classifier, encoder, decoder; W before b)."""
        return [p.get_value() for p in self.graph.networks.params]

    def set_param_values(self, values):
        """Set the parameters from arrays in :meth:`get_param_values` order."""
        params = self.graph.networks.params
        if len(values) != len(params):
            raise ValueError(f"expected {len(params)} parameter arrays, got {len(values)}")
        set_checked(params, values)
        self.graph.fitted = True

    def param_values_by_name(self):
        return OrderedDict((p.name, p.get_value()) for p in self.graph.networks.params)

    def set_param_values_by_name(self, values):
        params = self.graph.networks.params
        missing = [p.name for p in params if p.name not in values]
        if missing:
            raise ValueError(f"missing parameters: {', '.join(missing)}")
        set_checked(params, [values[p.name] for p in params])
        self.graph.fitted = True

    def optimizer_state(self):
        """Adam's step count and moments by name: ``adam/t``, ``adam/m/<param>``, ``adam/v/<param>``."""
        return OrderedDict((v.name, v.get_value()) for v in self.graph.adam_state)

    def set_optimizer_state(self, state):
        variables = self.graph.adam_state
        missing = [v.name for v in variables if v.name not in state]
        if missing:
            raise ValueError(f"missing optimizer state: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        set_checked(variables, [state[v.name] for v in variables])

    def rng_states(self):
        """The state of every noise generator, by name (JSON-serialisable dicts)."""
        return OrderedDict(
            (name, rng.get_value(borrow=True).bit_generator.state) for name, rng in self.graph.rngs.items()
        )

    def set_rng_states(self, states):
        for name, rng in self.graph.rngs.items():
            if name not in states:
                raise ValueError(f"missing generator state {name!r}")
            generator = rng.get_value(borrow=False)
            generator.bit_generator.state = states[name]
            rng.set_value(generator, borrow=True)

    # -- training -------------------------------------------------------------

    def set_training_data(self, labeled_x, labeled_y, unlabeled_x, unfeatured_y, unfeatured_z):
        """Put the training sources into the graph's shared variables."""
        arrays = dict(
            labeled_x=labeled_x,
            labeled_y=labeled_y,
            unlabeled_x=unlabeled_x,
            unfeatured_y=unfeatured_y,
            unfeatured_z=unfeatured_z,
        )
        checked = check_batch(arrays, self.dims)
        for name, shared in self.graph.data.items():
            shared.set_value(checked[name], borrow=True)
        # Training has begun (training.fit starts here, for any number of
        # epochs, 0 too): the model counts as fitted.
        self.graph.fitted = True

    def train_step(self, labeled_index, unlabeled_index, unfeatured_index, learning_rate):
        """One optimiser step on the rows given by the index vectors; returns term -> value."""
        fn = self.graph.function("train")
        values = fn(
            np.asarray(labeled_index, dtype=np.int64),
            np.asarray(unlabeled_index, dtype=np.int64),
            np.asarray(unfeatured_index, dtype=np.int64),
            np.float32(learning_rate),
        )
        return OrderedDict(zip(self.graph.train_outputs, (float(v) for v in values)))

    def evaluate(self, labeled_x, labeled_y, unlabeled_x, unfeatured_y, unfeatured_z):
        """All five terms and the total on the given arrays, with fresh noise; no update."""
        batch = check_batch(
            dict(
                labeled_x=labeled_x,
                labeled_y=labeled_y,
                unlabeled_x=unlabeled_x,
                unfeatured_y=unfeatured_y,
                unfeatured_z=unfeatured_z,
            ),
            self.dims,
        )
        values = self.graph.function("evaluate")(*batch.values())
        return OrderedDict(zip(list(presets.TERMS) + ["total"], (float(v) for v in values)))

    def fit(self, X, y=None, *, classes=None, unfeatured_y=None, unfeatured_z=None, **options):
        """Train on labeled and unlabeled rows (scikit-learn's semi-supervised convention), or on a split.

        Parameters
        ----------
        X : array of shape (n_samples, n_features), or a split
            The images, as floats in [0, 1] (the decoder is a Bernoulli
            likelihood). Or an :class:`untapped.data.MNISTSplit`-like object
            (``labeled_x``, ``labeled_y``, ``unlabeled_x``, ``unfeatured_y``,
            ``unfeatured_z``, and the evaluation arrays): the experiment's
            path, which trains from the current parameters with evaluations,
            as :func:`untapped.training.fit`; ``y`` and the keywords below
            must then be left out.
        y : array of shape (n_samples,)
            Class labels, ``-1`` for unlabeled rows. Labeled rows train the
            forward bound and the classifier; unlabeled rows the unlabeled
            bound. Without unlabeled rows, every row also serves as an
            unlabeled one (as the paper's unlabeled images include labeled ones).
        classes : array-like, optional
            All class labels, in the order of :attr:`classes_`; needed when
            some classes have no labeled row (the paper's MNIST task labels
            digits 0-4 of ten). Default: the labels present in ``y``.
        unfeatured_y : array of shape (n_unfeatured, n_classes), optional
            Labels without features for the reverse bound, over
            :attr:`classes_`. Default: the MNIST task's soft corners
            (:func:`untapped.data.close_corners`, one per class).
        unfeatured_z : array of shape (n_unfeatured, n_latent), optional
            The z paired with each row of ``unfeatured_y``. Default: drawn
            uniformly from the prior's box with ``np.random.default_rng(seed)``,
            as :func:`untapped.data.make_split` draws them.
        **options
            Options of :func:`untapped.training.fit` (``epochs``,
            ``eval_every``, ``checkpoint_path``, ``progress``, ``log``, ...);
            the batch size is the hyperparameter ``batch_size``.

        Returns
        -------
        self

        Notes
        -----
        ``fit(X, y)`` starts from the seed's initial weights and generators
        every time, so fitting twice gives the same model. There is no
        held-out set, so it makes no evaluations; ``history_`` holds the
        training terms per epoch.
        """
        from untapped import training

        if is_split(X):
            extra = dict(y=y, classes=classes, unfeatured_y=unfeatured_y, unfeatured_z=unfeatured_z)
            given = [k for k, v in extra.items() if v is not None]
            if given:
                raise ValueError(f"fit(split) takes the split alone; {', '.join(given)} must be left out")
            self.classes_ = np.arange(X.labeled_y.shape[1] if self.n_classes is None else self.n_classes)
            self.n_features_in_ = int(X.labeled_x.shape[1] if self.n_features is None else self.n_features)
            training.fit(self, X, **options)
        else:
            data = semi_supervised_data(self, X, y, classes, unfeatured_y, unfeatured_z)
            if "graph_" in self.__dict__ and self.graph_.dims != self.dims:
                self._drop_graph()
            self.graph.reset()
            training.fit(self, data, evaluation=False, **options)
        return self

    # -- inference --------------------------------------------------------------

    def predict_proba(self, X):
        """softmax(l(X)): q(y|x) at its mode (the original's deterministic ``predict``), columns in
        :attr:`classes_` order."""
        check_is_fitted(self)
        return self.graph.function("predict")(self._rows("X", X))

    def predict(self, X):
        """The class of :attr:`classes_` that q(y|x) ranks highest, for each row of X."""
        index = np.argmax(self.predict_proba(X), axis=1)
        return self.classes_[index] if "classes_" in self.__dict__ else index

    def encode(self, x, y):
        """Deterministic z = flow(mean_z(x, y)) (the original's ``getZ2(x, y, deterministic=True)``).

        ``y`` holds rows of class probabilities (one-hot or soft), ``n_classes`` wide.
        """
        check_is_fitted(self)
        x, y = self._rows("X", x), self._rows("y", y)
        same_rows(x=x, y=y)
        return self.graph.function("encode")(x, y)

    def generate(self, y, z, threshold=False, double_pass=False):
        """Decoder output for (y, z): the Bernoulli mean, or ``1[mean >= 0.5]`` with ``threshold``.

        ``double_pass`` reproduces the original's ``generate(y=..., z2=...)``
        (``S2S_DGM.py:785-796``): the thresholded image x' is re-encoded,
        y' = softmax(l(x')), z' = flow(mean_z(x', y')), and (y', z') decoded again.
        The original's Figure 2 is ``threshold=True, double_pass=True``.
        """
        check_is_fitted(self)
        y, z = self._rows("y", y), self._rows("z", z)
        same_rows(y=y, z=z)
        if double_pass:
            first = self.graph.function("decode_threshold")(y, z)
            y = self.predict_proba(first)
            z = self.encode(first, y)
        return self.graph.function("decode_threshold" if threshold else "decode_mean")(y, z)

    # -- reference outputs ------------------------------------------------------

    def trace(self, batch, noise):
        """Every intermediate of the three passes, the five terms and the total for given noise.

        ``batch`` maps :data:`passes.BATCH` names to arrays; ``noise`` maps
        ``source/name`` (:data:`samplers.NOISE`) to arrays. Returns an ordered
        dict ``source/intermediate`` -> array, then ``terms/<term>`` and ``total``.
        """
        values = self.graph.function("trace")(*self._given(batch, noise))
        return OrderedDict(zip(self.graph.trace_outputs, values))

    def total_gradients(self, batch, noise):
        """The total and its gradient for every parameter, by name, for given noise."""
        values = self.graph.function("gradients")(*self._given(batch, noise))
        names = ["total"] + self.param_names
        return OrderedDict(zip(names, values))

    def step_with_noise(self, batch, noise, learning_rate):
        """One optimiser step (the training update) on a given batch with given noise; returns the total."""
        self.graph.fitted = True
        return float(self.graph.function("step_with_noise")(*self._given(batch, noise), np.float32(learning_rate)))

    def apply_gradients(self, gradients, learning_rate):
        """The training update (rescale, clip, Adam) applied to given raw gradients, by parameter name."""
        missing = [name for name in self.param_names if name not in gradients]
        if missing:
            raise ValueError(f"missing gradients: {', '.join(missing)}")
        self.graph.fitted = True
        given = [as_float32(gradients[name]) for name in self.param_names]
        self.graph.function("apply_gradients")(*given, np.float32(learning_rate))

    def noise_shapes(self, batch_rows):
        """Shape of each noise array for a batch with ``batch_rows[source]`` rows per source."""
        return OrderedDict(
            (samplers.noise_key(s), (batch_rows[s.source], self.dims[s.width])) for s in samplers.NOISE
        )

    def _rows(self, name, array):
        """``array`` validated as rows of x (``name`` 'X'), y or z: float32, finite, of the model's width."""
        width = dict(X="n_features", y="n_classes", z="n_latent")[name]
        if name == "X":
            array = validated(validate_data, self, array, reset=False)
        return checked_matrix(name, array, self.dims[width])

    def _given(self, batch, noise):
        batch = check_batch(batch, self.dims)
        rows = {source: batch[name].shape[0] for source, name in passes.SOURCE_ROWS.items()}
        expected = self.noise_shapes(rows)
        arrays = []
        for key, shape in expected.items():
            if key not in noise:
                raise ValueError(f"missing noise array {key!r}")
            array = as_float32(noise[key])
            if array.shape != shape:
                raise ValueError(f"noise {key!r} has shape {array.shape}, expected {shape}")
            arrays.append(array)
        return list(batch.values()) + arrays
