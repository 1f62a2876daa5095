"""The training step in JAX, written from the paper (``docs/paper.md``) and ``docs/reference_format.md``.

As a JAX user would write it: parameters in a dict keyed by the bundle's
names (``W`` is ``(fan_in, fan_out)``, a layer is ``h @ W + b``), pure
functions for the networks, samplers and terms, and the whole step (noise,
the three passes, the five terms, the gradient, the rescale and clip, Adam)
in one ``jax.jit`` with the parameters and Adam's state donated. float32
throughout (JAX's default); XLA's CPU backend runs on every core.

The step takes each source's rows and one index vector per source and
gathers the batch inside the step, as untapped's does. The unfeatured source
(10 (y, z) pairs in the paper's setup) is decoded once per distinct row and
the decoder's means gathered to the batch, the same work untapped's step does.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from common import (
    BERN_HIGH,
    BERN_LOW,
    COEFFICIENTS,
    LEARNING_RATE,
    N_CLASSES,
    OPTIMIZER,
    PARAM_NAMES,
    TEMPERATURE,
    Z_HIGH,
    Z_LOW,
    active_terms,
)  # fmt: skip

NAME = "JAX jit"
F32 = jnp.float32
LOG_2PI = math.log(2 * math.pi)
#: The unlabeled bound's constant (paper eq. 4: the original's single-sample logsumexp).
LOG_1P_EPS = float(np.log(np.float32(1) + np.float32(1e-5)))
#: Adam's constants rounded to float32 first, ``1 - beta`` a float32 subtraction (reference_format.md §7.6).
BETA1, BETA2 = np.float32(OPTIMIZER["beta1"]), np.float32(OPTIMIZER["beta2"])
ONE_MINUS_BETA1, ONE_MINUS_BETA2 = np.float32(1) - BETA1, np.float32(1) - BETA2
ADAM_EPSILON = np.float32(OPTIMIZER["epsilon"])


def versions():
    import jaxlib

    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


# ---------------------------------------------------------------------------
# Networks and samplers (paper eqs. 1-2, App. A; reference_format.md §7.2)


def dense(p, layer, h):
    return h @ p[f"{layer}/W"] + p[f"{layer}/b"]


def classifier(p, x):
    """q(y|x)'s logits: two tanh layers of 50, then 10 logits."""
    h = jnp.tanh(dense(p, "classifier/hidden1", x))
    h = jnp.tanh(dense(p, "classifier/hidden2", h))
    return dense(p, "classifier/logits", h)


def concrete_sample(logits, u):
    """y~ = softmax((l + g) / tau), g = -log(-log(u + 1e-4) + 1e-4) (eq. 2)."""
    g = -jnp.log(-jnp.log(u + 1e-4) + 1e-4)
    return jax.nn.softmax((logits + g) / TEMPERATURE, axis=-1)


def encoder(p, x, y, eps):
    """q(z|x,y): z~ = mu + sigma eps, z = the logistic flow of z~ (App. A, eq. 10), and log q(z|x,y)."""
    h = jnp.tanh(dense(p, "encoder/hidden1", jnp.concatenate([x, y], axis=1)))
    h = jnp.tanh(dense(p, "encoder/hidden2", h))
    mean = dense(p, "encoder/mean", h)
    std = jax.nn.softplus(dense(p, "encoder/std", h))
    z_tilde = mean + std * eps
    s = jax.nn.sigmoid(z_tilde)
    z = Z_LOW + (Z_HIGH - Z_LOW) * s
    # The log-determinant as the original codes it (App. A, eq. 16 with a 1e-5 guard).
    log_det = jnp.log(1e-5 + jnp.prod((Z_HIGH - Z_LOW) * s * (1 - s), axis=1))
    # log N(z~; mu, sigma) with z~ - mu written as sigma eps (§7.4).
    sd = std + 1e-5
    log_normal = jnp.sum(-0.5 * LOG_2PI - jnp.log(sd) - (std * eps) ** 2 / (2 * sd**2), axis=1)
    return dict(z_mean=mean, z_std=std, z_tilde=z_tilde, z=z, z_log_det=log_det), log_normal - log_det


def decoder(p, y, z):
    """p(x|y,z)'s Bernoulli means: two tanh layers of 250 and 500, then a sigmoid (eq. 1)."""
    h = jnp.tanh(dense(p, "decoder/hidden1", jnp.concatenate([y, z], axis=1)))
    h = jnp.tanh(dense(p, "decoder/hidden2", h))
    return jax.nn.sigmoid(dense(p, "decoder/mean", h))


def bernoulli_sample(mean, u):
    """x^ = 1[u < mean], carrying no gradient (as Theano 0.9's cast)."""
    return jax.lax.stop_gradient((u < mean).astype(F32))


# ---------------------------------------------------------------------------
# Densities and terms (eqs. 3, 4, 7, 17; reference_format.md §7.4)


def log_bernoulli(x, mean):
    m = jnp.clip(mean, BERN_LOW, BERN_HIGH)
    return jnp.sum(x * jnp.log(m) + (1 - x) * jnp.log(1 - m), axis=1)


def log_concrete(y, logits):
    """Maddison et al.'s Concrete density, its last sum in log space (§7.4)."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    log_y = jnp.log(y)
    c = N_CLASSES
    return (
        math.lgamma(c) + (c - 1) * math.log(TEMPERATURE)
        - c * jax.nn.logsumexp(log_p - TEMPERATURE * log_y, axis=1)
        + jnp.sum(log_p - (TEMPERATURE + 1) * log_y, axis=1)
    )  # fmt: skip


def x_to_y_loss(y, y_sample):
    """J_f^d as coded: a KL divergence clipped at 1e-6, with the simplex's last coordinate (eq. 7)."""
    a, q = jnp.clip(y, 1e-6, 1), jnp.clip(y_sample, 1e-6, 1)
    a_last = jnp.clip(1 - jnp.sum(y, axis=1), 1e-6, 1)
    q_last = jnp.clip(1 - jnp.sum(y_sample, axis=1), 1e-6, 1)
    return jnp.mean(jnp.sum(a * (jnp.log(a) - jnp.log(q)), axis=1) + a_last * (jnp.log(a_last) - jnp.log(q_last)))


def loss(params, batch, noise, terms, unfeatured_index=None):
    """The weighted total of ``terms`` (eq. 8), with ``(terms, forward arrays)`` beside it.

    ``batch`` holds a batch's rows, except that with ``unfeatured_index`` its
    unfeatured (y, z) are the source's rows, decoded once each and gathered.
    """
    forward, values = {}, {}
    # Labeled pass (eq. 3): q(y|x) for the x->y loss, z ~ q(z|x,y), x ~ p(x|y,z).
    lx, ly = batch["labeled_x"], batch["labeled_y"]
    logits = classifier(params, lx)
    y_sample = concrete_sample(logits, noise["labeled/gumbel_uniform"])
    z_values, log_q_z = encoder(params, lx, ly, noise["labeled/gaussian_eps"])
    x_mean = decoder(params, ly, z_values["z"])
    x_sample = bernoulli_sample(x_mean, noise["labeled/bernoulli_uniform"])
    forward.update({f"labeled/{k}": v for k, v in dict(
        logits=logits, y_probs=jax.nn.softmax(logits), y_sample=y_sample, **z_values, x_mean=x_mean, x_sample=x_sample
    ).items()})  # fmt: skip
    values["labeled_elbo"] = jnp.mean(log_q_z - log_bernoulli(lx, x_mean))
    values["x_to_y_loss"] = x_to_y_loss(ly, y_sample)
    values["y_to_x_loss"] = jnp.mean(jnp.sqrt(jnp.sum((x_sample - lx) ** 2, axis=1)))

    # Unlabeled pass (eq. 4): y~ ~ q(y|x), z ~ q(z|x,y~), the same y~ decoded.
    ux = batch["unlabeled_x"]
    logits = classifier(params, ux)
    y_sample = concrete_sample(logits, noise["unlabeled/gumbel_uniform"])
    z_values, log_q_z = encoder(params, ux, y_sample, noise["unlabeled/gaussian_eps"])
    x_mean = decoder(params, y_sample, z_values["z"])
    forward.update({f"unlabeled/{k}": v for k, v in dict(
        logits=logits, y_probs=jax.nn.softmax(logits), y_sample=y_sample, **z_values, x_mean=x_mean
    ).items()})  # fmt: skip
    values["unlabeled_elbo"] = (
        jnp.mean(log_concrete(y_sample, logits) + log_q_z - log_bernoulli(ux, x_mean)) + LOG_1P_EPS
    )

    if "reverse_elbo" in terms:
        # Unfeatured pass (App. B, eq. 17 as coded): decode the observed (y, z), read y back from x^.
        uy, uz = batch["unfeatured_y"], batch["unfeatured_z"]
        x_mean = decoder(params, uy, uz)
        if unfeatured_index is not None:
            x_mean, uy = x_mean[unfeatured_index], uy[unfeatured_index]
        x_sample = bernoulli_sample(x_mean, noise["unfeatured/bernoulli_uniform"])
        logits = classifier(params, x_sample)
        forward.update({"unfeatured/logits": logits, "unfeatured/y_probs": jax.nn.softmax(logits),
                        "unfeatured/x_mean": x_mean, "unfeatured/x_sample": x_sample})  # fmt: skip
        values["reverse_elbo"] = jnp.mean(log_bernoulli(x_sample, x_mean) - log_concrete(uy, logits))

    values = {t: values[t] for t in terms}
    return sum(c * values[t] for t, c in terms.items() if c != 0.0), (values, forward)


# ---------------------------------------------------------------------------
# The update (Algorithm 1's Gamma; reference_format.md §7.6)


def init_adam(params):
    def zeros():
        return {n: jnp.zeros_like(v) for n, v in params.items()}

    return dict(t=jnp.zeros((), F32), m=zeros(), v=zeros())


def update(params, adam, grads, learning_rate):
    """Rescale the gradient to total norm <= 5, clip it to [-1, 1], then one step of Lasagne's Adam."""
    o = OPTIMIZER
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in grads.values()))
    scale = jnp.clip(norm, 0, o["max_norm"]) / (o["norm_epsilon"] + norm)
    grads = {n: jnp.clip(g * scale, -o["clip_grad"], o["clip_grad"]) for n, g in grads.items()}
    t = adam["t"] + 1
    a_t = learning_rate * jnp.sqrt(1 - BETA2**t) / (1 - BETA1**t)
    m = {n: BETA1 * adam["m"][n] + ONE_MINUS_BETA1 * g for n, g in grads.items()}
    v = {n: BETA2 * adam["v"][n] + ONE_MINUS_BETA2 * g**2 for n, g in grads.items()}
    params = {n: params[n] - a_t * m[n] / (jnp.sqrt(v[n]) + ADAM_EPSILON) for n in params}
    return params, dict(t=t, m=m, v=v)


def step_with_noise(params, adam, batch, noise, learning_rate, terms, unfeatured_index=None):
    """One optimiser step at the given noise: the new state, the total, its terms and forward arrays, the raw
    gradient."""
    (total, (values, forward)), grads = jax.value_and_grad(loss, has_aux=True)(
        params, batch, noise, terms, unfeatured_index
    )
    params, adam = update(params, adam, grads, learning_rate)
    return params, adam, total, values, forward, grads


# ---------------------------------------------------------------------------
# The training step of the benchmark, and the first step of a reference bundle


def draw_noise(key, rows, terms):
    """The noise the step's passes consume (§4.1), drawn with JAX's own generator."""
    k = jax.random.split(key, 6)
    shapes = {
        "labeled/gumbel_uniform": (rows, N_CLASSES), "labeled/gaussian_eps": (rows, 2),
        "labeled/bernoulli_uniform": (rows, 784), "unlabeled/gumbel_uniform": (rows, N_CLASSES),
        "unlabeled/gaussian_eps": (rows, 2),
    }  # fmt: skip
    if "reverse_elbo" in terms:
        shapes["unfeatured/bernoulli_uniform"] = (rows, 784)
    return {
        name: (jax.random.normal if name.endswith("eps") else jax.random.uniform)(k[i], shape, F32)
        for i, (name, shape) in enumerate(shapes.items())
    }


class Trainer:
    """The benchmark's training step on one model's sources: ``step(index) -> total``."""

    name = NAME

    def __init__(self, model, params, data, seed=0):
        self.terms = {t: COEFFICIENTS[model][t] for t in active_terms(model)}
        self.params = {n: jnp.asarray(params[n]) for n in PARAM_NAMES}
        self.adam = init_adam(self.params)
        self.data = {k: jnp.asarray(v) for k, v in data.items()}
        self.key = jax.random.key(seed)
        self._step = jax.jit(partial(self._train_step, terms=self.terms), donate_argnums=(0, 1, 4))

    @staticmethod
    def _train_step(params, adam, data, index, key, learning_rate, terms):
        key, noise_key = jax.random.split(key)
        rows = index["labeled"].shape[0]
        batch = {
            "labeled_x": data["labeled_x"][index["labeled"]], "labeled_y": data["labeled_y"][index["labeled"]],
            "unlabeled_x": data["unlabeled_x"][index["unlabeled"]],
            "unfeatured_y": data["unfeatured_y"], "unfeatured_z": data["unfeatured_z"],
        }  # fmt: skip
        noise = draw_noise(noise_key, rows, terms)
        params, adam, total, values, _, _ = step_with_noise(
            params, adam, batch, noise, learning_rate, terms, index["unfeatured"]
        )
        return params, adam, key, total, values

    def step(self, index):
        index = {s: np.asarray(i, dtype=np.int32) for s, i in index.items()}
        self.params, self.adam, self.key, total, _ = self._step(
            self.params, self.adam, self.data, index, self.key, np.float32(LEARNING_RATE)
        )
        return float(total)


def first_step(bundle):
    """The datasets of a reference bundle a port computes (§3), by name, with this step's own code."""
    from common import bundle_datasets

    terms = dict(COEFFICIENTS[bundle["model"]])
    run = jax.jit(partial(step_with_noise, terms=terms))
    lr = np.float32(LEARNING_RATE)

    def at(params, batch, noise):
        params = {n: jnp.asarray(v) for n, v in params.items()}
        return run(params, init_adam(params), batch, noise, lr)

    out = {}
    for prefix, section, params in (
        ("", bundle, bundle["params"]),
        ("edge/", bundle["edge"], bundle["edge"]["params"]),
    ):
        _, _, total, values, forward, grads = at(params, section["batch"], section["noise"])
        out.update(bundle_datasets(prefix, total, values, forward, grads))
    if bundle["step_noise"] is not None:
        new, adam, total, _, _, grads = at(bundle["params"], bundle["batch"], bundle["step_noise"])
        out.update(bundle_datasets("steps/1/", total, gradients=grads))
        out.update(_state("steps/1/", new, adam))
    initial = {n: jnp.asarray(v) for n, v in bundle["params"].items()}
    for case, grads in bundle["updates"].items():
        new, adam = jax.jit(update)(initial, init_adam(initial), {n: jnp.asarray(g) for n, g in grads.items()}, lr)
        out.update(_state(f"edge/updates/{case}/", new, adam))
    return out


def _state(prefix, params, adam):
    out = {f"{prefix}params/{n}": v for n, v in params.items()}
    out[f"{prefix}adam/t"] = adam["t"]
    out.update({f"{prefix}adam/{k}/{n}": v for k in ("m", "v") for n, v in adam[k].items()})
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}

