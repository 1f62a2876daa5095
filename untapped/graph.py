"""The graph of an :class:`untapped.model.SSDGM`: built once from the paper layer, compiled per use.

The graph is built on explicit noise tensors (:mod:`untapped.paper.samplers`), from
:mod:`untapped.paper` with the kernels of its compile mode
(:func:`untapped.backend.kernels`). Functions compiled from it:

- the training step: data live in shared variables and a step receives only
  index vectors and the learning rate; noise is drawn inside the compiled
  function by seeded PyTensor generators; the update is the original's
  gradient of the total, rescaled to total norm <= 5, clipped to [-1, 1],
  then Adam as Lasagne's master computes it (:func:`untapped.updates.adam`;
  the original's ``S2S_DGM.py:1368-1374``);
- evaluation of all five terms on given arrays, with its own generators;
- ``predict`` / ``generate`` / ``encode``, deterministic;
- ``trace`` / ``gradients`` / ``step_with_noise``: the same graph with the
  noise as ordinary inputs, for reference outputs and tests.
"""

import copy
import warnings
from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.traversal import ancestors
from pytensor.tensor.basic import tensor_copy
from pytensor.tensor.random import shared_rng

from parmesan_compat.backend import load_lasagne
from untapped import backend, updates
from untapped.data import UNFEATURED_Z_BOX
from untapped.paper import passes, samplers, terms
from untapped.paper.networks import Networks
from untapped.streams import streams

REVERSE_ELBO_VARIANTS = ("code", "eq17")
#: Where the training step's unfeatured z come from: the split's fixed draws
#: (the code), or a fresh z ~ p(z) for every row of every batch (Alg. 1).
UNFEATURED_Z_SOURCES = ("fixed", "prior")


class ModelGraph:
    """The symbolic graph of an :class:`SSDGM`, its shared state and its compiled functions."""

    def __init__(self, est):
        if est.reverse_elbo_variant not in REVERSE_ELBO_VARIANTS:
            raise ValueError(
                f"unknown reverse_elbo_variant {est.reverse_elbo_variant!r}; "
                f"choose one of {', '.join(REVERSE_ELBO_VARIANTS)}"
            )
        if est.reverse_y_density not in terms.REVERSE_Y_DENSITIES:
            raise ValueError(
                f"unknown reverse_y_density {est.reverse_y_density!r}; "
                f"choose one of {', '.join(terms.REVERSE_Y_DENSITIES)}"
            )
        if est.unfeatured_z not in UNFEATURED_Z_SOURCES:
            raise ValueError(
                f"unknown unfeatured_z {est.unfeatured_z!r}; choose one of {', '.join(UNFEATURED_Z_SOURCES)}"
            )
        # No reference to the estimator: a graph outlives it in the pool (untapped.graph_pool).
        self.dims = dict(est.dims)
        self.unfeatured_z = est.unfeatured_z
        self.mode_name = backend.resolve_mode(est.mode)
        self.kernels = backend.kernels(self.mode_name)
        self.mode = backend.compile_mode(self.mode_name)
        self.train_mode = backend.compile_mode(self.mode_name, keep_buffers=True)
        self._functions = {}
        #: True once the parameters were trained or set (``SSDGM.__sklearn_is_fitted__``).
        self.fitted = False
        with backend.float32():
            self.networks = Networks(
                n_features=self.dims["n_features"],
                n_classes=self.dims["n_classes"],
                n_latent=self.dims["n_latent"],
                classifier_hidden=tuple(est.classifier_hidden),
                encoder_hidden=tuple(est.encoder_hidden),
                decoder_hidden=tuple(est.decoder_hidden),
                temperature=est.concrete_temperature,
                z_low=est.z_low,
                z_high=est.z_high,
                exact_log_det=est.exact_flow_log_det,
                seed=est.seed,
                kernels=self.kernels,
            )
            self._build_symbolic(est)
            self._build_update(est)
            self._build_data_and_generators(est)
        self._initial = self.state()

    # -- state ----------------------------------------------------------------

    def state(self):
        """Copies of the parameters, Adam's state and the generator states, and ``fitted``."""
        return dict(
            fitted=self.fitted,
            params=OrderedDict((p.name, p.get_value()) for p in self.networks.params),
            optimizer=OrderedDict((v.name, v.get_value()) for v in self.adam_state),
            rngs=OrderedDict(
                (name, copy.deepcopy(rng.get_value(borrow=True).bit_generator.state)) for name, rng in self.rngs.items()
            ),
        )

    def set_state(self, state):
        """Restore a :meth:`state`."""
        set_checked(self.networks.params, [state["params"][p.name] for p in self.networks.params])
        set_checked(self.adam_state, [state["optimizer"][v.name] for v in self.adam_state])
        for name, rng in self.rngs.items():
            generator = rng.get_value(borrow=False)
            generator.bit_generator.state = copy.deepcopy(state["rngs"][name])
            rng.set_value(generator, borrow=True)
        self.fitted = bool(state["fitted"])

    def reset(self):
        """Back to the state it was built in (the seed's weights and generators, Adam at zero), with no data.

        The compiled functions stay, without the buffers the training step
        keeps between calls (at batch 10,000 they hold hundreds of MB).
        """
        self.set_state(self._initial)
        for name, width in passes.BATCH.items():
            self.data[name].set_value(np.zeros((0, self.dims[width]), dtype="float32"), borrow=True)
        for function in self._functions.values():
            function.free()

    def _build_symbolic(self, est):
        self.batch = passes.symbolic_batch()
        self.noise = samplers.symbolic_noise()
        nets, b, n = self.networks, self.batch, self.noise
        encode_generated = est.reverse_elbo_variant == "eq17"
        self.unfeatured_distinct = pairs = None
        if self.kernels.decode_distinct_pairs:
            # The distinct unfeatured (y, z) pairs of a batch and the pair of
            # each row, for the decoder to run once a pair. Here every row is
            # its own pair; the training step substitutes the distinct pairs
            # of its data (10 pairs fill a batch of 10,000; see _compile_train).
            self.unfeatured_distinct = OrderedDict(
                y=tensor_copy(b["unfeatured_y"]),
                z=tensor_copy(b["unfeatured_z"]),
                rows=pt.arange(b["unfeatured_y"].shape[0], dtype="int64"),
            )
            pairs = tuple(self.unfeatured_distinct.values())
        self.passes = OrderedDict(
            labeled=passes.labeled_pass(nets, b["labeled_x"], b["labeled_y"], n),
            unlabeled=passes.unlabeled_pass(nets, b["unlabeled_x"], n),
            unfeatured=self.kernels.unfeatured_pass(
                nets, b["unfeatured_y"], b["unfeatured_z"], n, pairs, encode_generated
            ),
        )
        self.terms = terms.all_terms(
            b,
            *self.passes.values(),
            temperature=est.concrete_temperature,
            reverse_y_density=est.reverse_y_density,
            kernels=self.kernels,
        )
        self.coefficients = est.coefficients
        self.total = terms.total_loss(self.terms, self.coefficients)
        self.train_outputs = [t for t in self.terms if self.coefficients[t] != 0.0] + ["total"]
        self.trace_outputs = [
            f"{source}/{name}" for source, values in self.passes.items() for name, _ in values.items()
        ]
        self.trace_outputs += [f"terms/{t}" for t in self.terms] + ["total"]

    def _build_update(self, est):
        params = self.networks.params
        self.gradients = pytensor.grad(self.total, params, disconnected_inputs="ignore")
        grads = load_lasagne().updates.total_norm_constraint(self.gradients, max_norm=est.max_norm)
        grads = [pt.clip(g, -est.clip_grad, est.clip_grad) for g in grads]
        self.learning_rate = pt.scalar("learning_rate")
        self.updates = updates.adam(
            grads,
            params,
            learning_rate=self.learning_rate,
            beta1=est.adam_beta1,
            beta2=est.adam_beta2,
            epsilon=est.adam_epsilon,
        )
        self.adam_state = _name_adam_state(self.updates, params)

    def _build_data_and_generators(self, est):
        self.data = OrderedDict(
            (name, pytensor.shared(np.zeros((0, self.dims[width]), dtype="float32"), name=f"data/{name}"))
            for name, width in passes.BATCH.items()
        )
        self.index = OrderedDict((source, pt.vector(f"{source}_index", dtype="int64")) for source in passes.SOURCE_ROWS)
        # One generator per noise array, for training and for evaluation, all
        # derived from the seed, so every draw is reproducible and can be resumed.
        seeds = streams(est.seed)
        train_seeds, eval_seeds = seeds["train"], seeds["evaluate"]
        self.rngs = OrderedDict()
        self.train_noise = self._random_noise(train_seeds, "train", lambda s: self.index[s].shape[0])
        self.eval_noise = self._random_noise(
            eval_seeds, "evaluate", lambda s: self.batch[passes.SOURCE_ROWS[s]].shape[0]
        )
        if est.unfeatured_z == "prior":
            name = "train/unfeatured/prior_z"
            rng = shared_rng(np.random.default_rng(seeds[name]), name=name)
            self.rngs[rng.name] = rng
            next_rng, u = samplers.draw(
                rng, "uniform", (self.index["unfeatured"].shape[0], self.dims["n_latent"]), self.kernels
            )
            low, high = (np.float32(b) for b in UNFEATURED_Z_BOX)
            self.prior_z = (rng, next_rng, low + (high - low) * u)

    def _random_noise(self, seeds, prefix, rows):
        """Noise variable -> (its generator, the generator's next state, a draw of the right shape)."""
        draws = OrderedDict()
        dims = self.dims
        for spec, seed in zip(samplers.NOISE, seeds.spawn(len(samplers.NOISE))):
            key = samplers.noise_key(spec)
            rng = shared_rng(np.random.default_rng(seed), name=f"{prefix}/{key}")
            size = (rows(spec.source), dims[spec.width])
            # Uniforms are drawn in float32: NumPy's float32 uniforms are at most
            # 1 - 2**-24 (as Theano's MRG ones were). A float64 draw cast to
            # float32 can round to exactly 1.0 (one in ~40 full-size epochs),
            # where the original's Gumbel transform -log(-log(u + 1e-4) + 1e-4)
            # is NaN; and it is twice the work.
            next_rng, draw = samplers.draw(rng, spec.distribution, size, self.kernels)
            self.rngs[rng.name] = rng
            draws[self.noise[key]] = (rng, next_rng, draw)
        return draws

    # -- compiled functions ---------------------------------------------------

    def function(self, name):
        """The compiled function ``name``, compiled on first request."""
        if name not in self._functions:
            with backend.compiling(self.mode_name):
                self._functions[name] = getattr(self, f"_compile_{name}")()
        return self._functions[name]

    def _compile(self, inputs, outputs, mode=None, **kwargs):
        with warnings.catch_warnings():
            # In Numba mode NumPy's unique (the distinct pairs) runs in object
            # mode; that is expected, not worth a warning per op.
            warnings.filterwarnings("ignore", message="Numba will use object mode")
            return pytensor.function(inputs, outputs, mode=mode or self.mode, on_unused_input="ignore", **kwargs)

    def _compile_with_random_noise(self, inputs, outputs, noise, givens=None, updates=None, mode=None):
        """Compile with each noise tensor the outputs use replaced by a draw, and its generator advanced.

        Generators whose noise the outputs never read are left out, so a model
        that does not use a source (M2's unfeatured pass) draws nothing for it.
        """
        needed = set(ancestors(list(outputs) + [u for u in (updates or {}).values()]))
        givens, updates = OrderedDict(givens or {}), OrderedDict(updates or {})
        for var, (rng, next_rng, draw) in noise.items():
            if var in needed:
                givens[var] = draw
                updates[rng] = next_rng
        return self._compile(inputs, outputs, givens=givens, updates=updates, mode=mode)

    def _compile_train(self):
        outputs = [self.terms[t] for t in self.train_outputs[:-1]] + [self.total]
        data = OrderedDict(
            (var, self.data[name][self.index[passes.BATCH_SOURCE[name]]]) for name, var in self.batch.items()
        )
        updates = OrderedDict(self.updates)
        if self.unfeatured_z == "prior":
            # Every row has its own z ~ p(z).
            rng, next_rng, z = self.prior_z
            updates[rng] = next_rng
            data[self.batch["unfeatured_z"]] = z
        if self.unfeatured_distinct is not None:
            data.update(self._distinct_pairs(data))
        return self._compile_with_random_noise(
            list(self.index.values()) + [self.learning_rate],
            outputs,
            self.train_noise,
            givens=data,
            updates=updates,
            mode=self.train_mode,
        )

    def _distinct_pairs(self, data):
        """Givens of the distinct unfeatured pairs of a training batch, for the kernels' ``unfeatured_pass``."""
        distinct = self.unfeatured_distinct
        if self.unfeatured_z == "prior":
            # Every pair is distinct.
            z = data[self.batch["unfeatured_z"]]
            return {
                distinct["y"]: data[self.batch["unfeatured_y"]],
                distinct["z"]: z,
                distinct["rows"]: pt.arange(z.shape[0], dtype="int64"),
            }
        # The decoder runs once for each distinct unfeatured pair of the batch.
        pairs, rows = pt.unique(self.index["unfeatured"], return_inverse=True)
        return {
            distinct["y"]: self.data["unfeatured_y"][pairs],
            distinct["z"]: self.data["unfeatured_z"][pairs],
            distinct["rows"]: rows,
        }

    def _compile_evaluate(self):
        outputs = list(self.terms.values()) + [self.total]
        return self._compile_with_random_noise(list(self.batch.values()), outputs, self.eval_noise)

    def _noise_inputs(self):
        return list(self.batch.values()) + list(self.noise.values())

    def _compile_trace(self):
        outputs = (
            [v for values in self.passes.values() for _, v in values.items()] + list(self.terms.values()) + [self.total]
        )
        return self._compile(self._noise_inputs(), outputs)

    def _compile_gradients(self):
        return self._compile(self._noise_inputs(), [self.total] + self.gradients)

    def _compile_step_with_noise(self):
        return self._compile(self._noise_inputs() + [self.learning_rate], self.total, updates=self.updates)

    def _compile_apply_gradients(self):
        given = [g.type() for g in self.gradients]
        return self._compile(
            given + [self.learning_rate], [], updates=self.updates, givens=list(zip(self.gradients, given))
        )

    def _compile_predict(self):
        x = pt.matrix("x")
        return self._compile([x], self.networks.classifier(x, deterministic=True).sample)

    def _compile_encode(self):
        x, y = pt.matrix("x"), pt.matrix("y")
        return self._compile([x, y], self.networks.encoder(x, y, deterministic=True).z)

    def _decode(self, output):
        y, z = pt.matrix("y"), pt.matrix("z")
        return self._compile([y, z], getattr(self.networks.decoder(y, z, deterministic=True), output))

    def _compile_decode_mean(self):
        return self._decode("mean")

    def _compile_decode_threshold(self):
        return self._decode("sample")


def _name_adam_state(updates, params):
    """Name Lasagne's Adam variables ``adam/t``, ``adam/m/<param>``, ``adam/v/<param>``.

    Lasagne's ``adam`` inserts, for each parameter, its first and second moment
    and then the parameter itself, and the step count last.
    """
    keys = list(updates)
    state = []
    for param in params:
        at = keys.index(param)
        m, v = keys[at - 2], keys[at - 1]
        m.name, v.name = f"adam/m/{param.name}", f"adam/v/{param.name}"
        state += [m, v]
    t = keys[-1]
    t.name = "adam/t"
    return [t] + state


def set_checked(variables, values):
    """Set each shared variable to its value, cast to its dtype; a one-line ValueError if a shape differs."""
    for var, value in zip(variables, values):
        current = var.get_value(borrow=True)
        value = np.asarray(value)
        if value.shape != current.shape:
            raise ValueError(f"{var.name}: shape {value.shape} does not match the model's {current.shape}")
        var.set_value(value.astype(current.dtype), borrow=False)
