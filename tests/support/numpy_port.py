"""An independent NumPy implementation of the original model (the "foreign port").

Written from a reading of the original code (``M12.py``, ``S2S_DGM.py`` and
its ``parmesan`` files, cited by line below; ``docs/original.md``), not from
untapped's PyTensor code, so that comparing the two checks both against the
original. It imports
nothing from ``untapped``: another framework's port can be checked against
it, and it can be checked against untapped.

What it computes, for given parameters and given noise (no random draws
happen here, except in the helpers :func:`initial_params` and :func:`draw_noise`):

- the three networks (``M12.py:77-162``): the classifier q(y|x)
  ``x -> tanh -> tanh -> logits``; the encoder q(z|x,y) ``[x, y] -> tanh ->
  tanh -> (linear mean, softplus std)``; the decoder p(x|y,z) ``[y, z] ->
  tanh -> tanh -> sigmoid mean``;
- the samplers (``parmesan/layers/sample.py:55-145, 184-243, 329-419``): Concrete ``softmax((l + g)/tau)`` with
  ``g = -log(-log(u + 1e-4) + 1e-4)``; Gaussian ``z~ = mu + sigma eps`` then the
  logistic flow ``z = a + (b - a) sigmoid(z~)``; Bernoulli ``x^ = 1[u < mean]``;
- the five terms (``M12.py:859-894``), with the densities and clips of
  ``parmesan/distributions.py``, and the total
  ``sum_t c_t term_t`` over the terms whose coefficient is non-zero;
- the paper's eq. 17 variant of the reverse bound (``reverse_elbo_variant=
  'eq17'``), which adds ``-log q(z_k | x^_k, y_k)`` for the observed z_k: the
  encoder is applied deterministically to (x^_k, y_k) and z_k is mapped back
  through the inverse flow (eqs. 12-13, ``u`` clipped to [1e-5, 1 - 1e-5]);
- the original's optimiser update (``S2S_DGM.py:1362-1374``): total-norm rescale to <= 5 (Lasagne,
  epsilon 1e-7), elementwise clip to [-1, 1], Lasagne master's Adam (epsilon 1e-4
  added to the uncorrected sqrt(v));
- central finite differences of the total, for gradient checks in float64.

Conventions (shared with untapped so results compare key by key):

- Parameters: a mapping ``name -> array`` with the names of :func:`param_names`
  (``classifier/hidden1/W``, ..., ``decoder/mean/b``), or a sequence in Lasagne's
  ``get_all_params`` order (classifier, encoder, decoder; layer by layer, W
  before b; the encoder's mean head before its std head). W has shape
  (fan_in, fan_out); the first layers read ``x`` (classifier), ``[x, y]``
  (encoder) and ``[y, z]`` (decoder), concatenated in that order.
- Batch: ``labeled_x`` (N, D), ``labeled_y`` (N, C), ``unlabeled_x`` (M, D),
  ``unfeatured_y`` (K, C), ``unfeatured_z`` (K, d).
- Noise (:data:`NOISE`): ``labeled/gumbel_uniform`` (N, C) U(0,1),
  ``labeled/gaussian_eps`` (N, d) N(0,1), ``labeled/bernoulli_uniform`` (N, D)
  U(0,1), ``unlabeled/gumbel_uniform`` (M, C), ``unlabeled/gaussian_eps``
  (M, d), ``unfeatured/bernoulli_uniform`` (K, D).
- :func:`trace` returns ``<source>/<intermediate>`` arrays, then
  ``terms/<term>`` and ``total``.

``dtype``: every array (parameters, batch, noise) is cast to ``dtype`` and
every operation stays in it; ``np.float32`` mirrors a float32 port,
``np.float64`` serves finite differences. Constants are Python floats so that
NumPy's promotion rules (NEP 50) never upcast a float32 computation.
"""

import math
from collections import OrderedDict

import numpy as np
from scipy.special import expit

# ---------------------------------------------------------------------------
# Constants of the original (``docs/original.md``; each cited where it is used)

GAIN = math.sqrt(2.0)
#: The flow's box, as coded (the paper's is [-1.5, 1.5]).
Z_LOW, Z_HIGH = -math.pi / 2, math.pi / 2
GUMBEL_EPS = 1e-4  # g = -log(-log(u + eps) + eps)
NORMAL_EPS = 1e-5  # added to the standard deviation in log N
BERNOULLI_CLIP = 1e-5  # mean clipped to [eps, 1 - eps] in log Bern
#: The clip's bounds are float32 numbers (reference_format.md §7.4): 1 - 1e-5 is 0.99998999,
#: so at the upper bound 1 - m' is 1.001358e-5; a float64 computation must use them too.
BERNOULLI_BOUNDS = (float(np.float32(BERNOULLI_CLIP)), float(np.float32(1.0 - BERNOULLI_CLIP)))
LOG_DET_EPS = 1e-5  # log(eps + prod_i (b - a) s_i (1 - s_i))
INVERSE_FLOW_CLIP = 1e-5  # u clipped to [eps, 1 - eps] in the inverse flow
KL_EPS = 1e-6  # the x->y loss clips both distributions to [eps, 1]
#: logsumexp over a single importance sample leaves log(1 + 1e-5); only the
#: unlabeled bound keeps it (the labeled bound's two cancel; ``M12.py:1113-1134``).
LOGSUMEXP_CONSTANT = math.log1p(1e-5)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

TERMS = ("labeled_elbo", "unlabeled_elbo", "reverse_elbo", "x_to_y_loss", "y_to_x_loss")
#: The original DEMO's weights (``DEMO_mnist.py:86-88``), and the M2 baseline's (``docs/fidelity.md`` item 27).
UNTAPPED_COEFFICIENTS = OrderedDict(
    labeled_elbo=0.1, unlabeled_elbo=0.1, reverse_elbo=0.1, x_to_y_loss=1.0, y_to_x_loss=0.01
)
M2_COEFFICIENTS = OrderedDict(UNTAPPED_COEFFICIENTS, reverse_elbo=0.0)
REVERSE_ELBO_VARIANTS = ("code", "eq17")

#: (name, distribution, source providing the rows, width) of every noise array, in drawing order.
NOISE = (
    ("labeled/gumbel_uniform", "uniform", "labeled_x", "n_classes"),
    ("labeled/gaussian_eps", "normal", "labeled_x", "n_latent"),
    ("labeled/bernoulli_uniform", "uniform", "labeled_x", "n_features"),
    ("unlabeled/gumbel_uniform", "uniform", "unlabeled_x", "n_classes"),
    ("unlabeled/gaussian_eps", "normal", "unlabeled_x", "n_latent"),
    ("unfeatured/bernoulli_uniform", "uniform", "unfeatured_y", "n_features"),
)
BATCH = ("labeled_x", "labeled_y", "unlabeled_x", "unfeatured_y", "unfeatured_z")

#: Optimiser settings of the original (``S2S_DGM.py:1368-1374``).
OPTIMIZER_DEFAULTS = dict(max_norm=5.0, norm_epsilon=1e-7, clip_grad=1.0, beta1=0.9, beta2=0.999, epsilon=1e-4)


# ---------------------------------------------------------------------------
# Parameters


def param_names(classifier_depth=2, encoder_depth=2, decoder_depth=2):
    """The parameter names in Lasagne's order, for the given numbers of hidden layers per network."""
    names = []
    for net, depth, heads in (
        ("classifier", classifier_depth, ("logits",)),
        ("encoder", encoder_depth, ("mean", "std")),
        ("decoder", decoder_depth, ("mean",)),
    ):
        for layer in [f"hidden{i}" for i in range(1, depth + 1)] + list(heads):
            names += [f"{net}/{layer}/W", f"{net}/{layer}/b"]
    return names


def as_param_dict(params, depths=(2, 2, 2)):
    """``params`` as an ordered ``name -> array`` dict; a sequence is read in Lasagne order for ``depths``."""
    if hasattr(params, "keys"):
        return OrderedDict((name, np.asarray(params[name])) for name in params)
    names = param_names(*depths)
    params = list(params)
    if len(params) != len(names):
        raise ValueError(f"expected {len(names)} parameter arrays for hidden depths {depths}, got {len(params)}")
    return OrderedDict(zip(names, (np.asarray(p) for p in params)))


def initial_params(
    seed=1234,
    n_features=784,
    n_classes=10,
    n_latent=2,
    classifier_hidden=(50, 50),
    encoder_hidden=(10, 10),
    decoder_hidden=(250, 500),
    gain=GAIN,
):
    """The original's initial parameters (``M12.py:77-162``): Glorot-uniform weights from ``RandomState(seed)``.

    Draws are taken in construction order (classifier hidden layers and
    logits, encoder hidden layers and mean head, decoder hidden layers and
    mean head), each ``uniform(0.0 - sqrt(3) std, 0.0 + sqrt(3) std)`` with
    ``std = gain * sqrt(2 / (fan_in + fan_out))``, cast to float32. The
    encoder's std head W and every bias are zero and take no draw.
    """
    rng = np.random.RandomState(seed)

    def glorot(fan_in, fan_out):
        std = gain * np.sqrt(2.0 / (fan_in + fan_out))
        return rng.uniform(
            low=0.0 - np.sqrt(3) * std, high=0.0 + np.sqrt(3) * std, size=(fan_in, fan_out)
        ).astype(np.float32)

    out = OrderedDict()

    def stack(net, fan_in, hidden):
        for i, units in enumerate(hidden, start=1):
            out[f"{net}/hidden{i}/W"] = glorot(fan_in, units)
            out[f"{net}/hidden{i}/b"] = np.zeros(units, np.float32)
            fan_in = units
        return fan_in

    top = stack("classifier", n_features, classifier_hidden)
    out["classifier/logits/W"] = glorot(top, n_classes)
    out["classifier/logits/b"] = np.zeros(n_classes, np.float32)
    top = stack("encoder", n_features + n_classes, encoder_hidden)
    out["encoder/mean/W"] = glorot(top, n_latent)
    out["encoder/mean/b"] = np.zeros(n_latent, np.float32)
    out["encoder/std/W"] = np.zeros((top, n_latent), np.float32)
    out["encoder/std/b"] = np.zeros(n_latent, np.float32)
    top = stack("decoder", n_classes + n_latent, decoder_hidden)
    out["decoder/mean/W"] = glorot(top, n_features)
    out["decoder/mean/b"] = np.zeros(n_features, np.float32)
    return out


def noise_shapes(batch, n_classes=None, n_latent=None, n_features=None):
    """``name -> shape`` of every noise array for ``batch`` (widths read from the batch unless given)."""
    dims = dict(
        n_features=n_features or np.shape(batch["labeled_x"])[1],
        n_classes=n_classes or np.shape(batch["labeled_y"])[1],
        n_latent=n_latent or np.shape(batch["unfeatured_z"])[1],
    )
    return OrderedDict((name, (np.shape(batch[rows])[0], dims[width])) for name, _, rows, width in NOISE)


def draw_noise(batch, rng):
    """Fresh float32 noise for ``batch`` from the NumPy generator ``rng``, in :data:`NOISE` order."""
    out = OrderedDict()
    kinds = {name: kind for name, kind, _, _ in NOISE}
    for name, shape in noise_shapes(batch).items():
        draw = rng.uniform(0.0, 1.0, size=shape) if kinds[name] == "uniform" else rng.standard_normal(shape)
        out[name] = draw.astype(np.float32)
    return out


# ---------------------------------------------------------------------------
# Elementary functions (``parmesan/layers/sample.py``, ``parmesan/distributions.py``)


def softmax(a):
    """Row-wise softmax, shifted by the row maximum."""
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(a):
    """The logistic function, without overflow (SciPy's ``expit`` keeps the dtype)."""
    return expit(a)


def softplus(a):
    """log(1 + exp(a)) without overflow."""
    return np.logaddexp(np.zeros((), a.dtype), a)


def gumbel(u):
    """Gumbel(0, 1) noise from U(0, 1) with the original's guard: ``-log(-log(u + 1e-4) + 1e-4)``.

    ``u + 1e-4`` is a float32 sum in any ``dtype`` (reference_format.md §7.2): near u = 1 the inner
    ``-log(u + 1e-4) + 1e-4`` is about ``1 - u``, so the sum's rounding moves g by up to 6e-8 / (1 - u),
    beyond the Concrete sample's tolerance, and a float64 port must round as the float32 ones do.
    """
    inner = (u + GUMBEL_EPS).astype(np.float32).astype(u.dtype)
    return -np.log(-np.log(inner) + GUMBEL_EPS)


def flow(z_tilde, low=Z_LOW, high=Z_HIGH):
    """Logistic flow into the box: ``z = low + (high - low) sigmoid(z~)``."""
    return low + (high - low) * sigmoid(z_tilde)


def flow_inverse(z, low=Z_LOW, high=Z_HIGH):
    """``z~ = log(u / (1 - u))``, ``u = (z - low)/(high - low)`` clipped to [1e-5, 1 - 1e-5]."""
    u = np.clip((z - low) / (high - low), INVERSE_FLOW_CLIP, 1.0 - INVERSE_FLOW_CLIP)
    return np.log(u / (1.0 - u))


def flow_log_det(z_tilde, low=Z_LOW, high=Z_HIGH, exact=False):
    """Per-row log|det dz/dz~|: the original's ``log(1e-5 + prod_i (b-a) s_i (1-s_i))``, or the exact sum."""
    s = sigmoid(z_tilde)
    if exact:
        return np.sum(math.log(high - low) + np.log(s) + np.log(1.0 - s), axis=-1)
    return np.log(LOG_DET_EPS + np.prod((high - low) * s * (1.0 - s), axis=-1))


def log_normal(x, mean, std):
    """Gaussian log density with the standard deviation guarded: ``s = std + 1e-5``
    (``parmesan/distributions.py:57-58``); elementwise."""
    s = std + NORMAL_EPS
    return -HALF_LOG_2PI - np.log(np.abs(s)) - (x - mean) ** 2 / (2.0 * s**2)


def log_bernoulli(x, mean):
    """``sum_d x_d log m_d + (1 - x_d) log(1 - m_d)``, ``m = clip(mean, 1e-5, 1 - 1e-5)``
    (``parmesan/distributions.py:194-195``); per row.

    The bounds are the float32 numbers :data:`BERNOULLI_BOUNDS`, whatever ``dtype``.
    """
    m = np.clip(mean, *BERNOULLI_BOUNDS)
    return np.sum(x * np.log(m) + (1.0 - x) * np.log(1.0 - m), axis=-1)


def log_concrete(y, logits, temperature=1.0):
    """Concrete log density with ``alpha = softmax(logits)`` (``parmesan/distributions.py:364-373``), per row,
    unclipped as in the original::

        log (k-1)! + (k-1) log tau - k log sum_i p_i / y_i^tau + sum_i log(p_i / y_i^(tau+1))
    """
    k = logits.shape[-1]
    p = softmax(logits)
    const = math.lgamma(k) + (k - 1) * math.log(temperature)
    return (
        const
        - k * np.log(np.sum(p / y**temperature, axis=-1))
        + np.sum(np.log(p / y ** (temperature + 1.0)), axis=-1)
    )


def log_q_z(z_tilde, z_mean, z_std, z_log_det):
    """log q(z|x,y) by change of variables: ``sum_i log N(z~_i; mu_i, sigma_i) - log det``
    (``parmesan/layers/flow.py:248``); per row."""
    return np.sum(log_normal(z_tilde, z_mean, z_std), axis=-1) - z_log_det


def clipped_kl(target, pred):
    """The original's ``KL`` loss per row (``M12.py:957-965``), with both sides clipped to [1e-6, 1] and a
    leftover-mass term."""
    a = np.clip(target, KL_EPS, 1.0)
    p = np.clip(pred, KL_EPS, 1.0)
    a_left = np.clip(1.0 - target.sum(axis=-1), KL_EPS, 1.0)
    p_left = np.clip(1.0 - pred.sum(axis=-1), KL_EPS, 1.0)
    return np.sum(a * (np.log(a) - np.log(p)), axis=-1) + a_left * (np.log(a_left) - np.log(p_left))


def euclidean(pred, target):
    """The original's ``L2`` loss per row (``M12.py:949-950``): the Euclidean norm, not its square."""
    return np.sqrt(np.sum((pred - target) ** 2, axis=-1))


# ---------------------------------------------------------------------------
# Networks (``M12.py:77-162``)


def _tanh_stack(params, net, h):
    i = 1
    while f"{net}/hidden{i}/W" in params:
        h = np.tanh(h @ params[f"{net}/hidden{i}/W"] + params[f"{net}/hidden{i}/b"])
        i += 1
    return h


def _dense(params, name, h):
    return h @ params[f"{name}/W"] + params[f"{name}/b"]


def classifier_logits(params, x):
    """l(x): tanh hidden layers, then a linear layer to the class logits."""
    return _dense(params, "classifier/logits", _tanh_stack(params, "classifier", x))


def encoder_heads(params, x, y):
    """(mu, sigma)(x, y): tanh hidden layers on ``[x, y]``, a linear mean and a softplus standard deviation."""
    h = _tanh_stack(params, "encoder", np.concatenate([x, y], axis=-1))
    return _dense(params, "encoder/mean", h), softplus(_dense(params, "encoder/std", h))


def decoder_mean(params, y, z):
    """b(y, z): tanh hidden layers on ``[y, z]``, then sigmoid Bernoulli means."""
    return sigmoid(_dense(params, "decoder/mean", _tanh_stack(params, "decoder", np.concatenate([y, z], axis=-1))))


def bernoulli(mean, uniform):
    """x^ = 1[u < mean] (no gradient, as Theano 0.9's binomial)."""
    return (uniform < mean).astype(mean.dtype)


# ---------------------------------------------------------------------------
# The three passes, the five terms, the total (``M12.py:578-632, 859-894``)


def _cast(arrays, dtype):
    return OrderedDict((k, np.asarray(v).astype(dtype)) for k, v in arrays.items())


def _check_options(coefficients, reverse_elbo_variant):
    if reverse_elbo_variant not in REVERSE_ELBO_VARIANTS:
        raise ValueError(f"unknown reverse_elbo_variant {reverse_elbo_variant!r}")
    coefficients = OrderedDict(coefficients)
    unknown = set(coefficients) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown terms in coefficients: {sorted(unknown)}")
    return coefficients


def trace(
    params,
    batch,
    noise,
    dtype=np.float32,
    coefficients=UNTAPPED_COEFFICIENTS,
    temperature=1.0,
    z_low=Z_LOW,
    z_high=Z_HIGH,
    exact_log_det=False,
    reverse_elbo_variant="code",
):
    """Every intermediate of the three passes, the five terms and the total, in ``dtype``.

    Returns an ordered dict with the keys (for each source, in this order)::

        labeled/{logits, y_probs, y_sample, z_mean, z_std, z_tilde, z, z_log_det, x_mean, x_sample}
        unlabeled/{logits, y_probs, y_sample, z_mean, z_std, z_tilde, z, z_log_det, x_mean}
        unfeatured/{logits, y_probs, x_mean, x_sample}
                    (+ z_mean, z_std, z_tilde, z_log_det with reverse_elbo_variant='eq17')
        terms/{labeled_elbo, unlabeled_elbo, reverse_elbo, x_to_y_loss, y_to_x_loss}
        total

    Passes (``M12.py:578-632``, eq = iw = 1):

    - labeled (x_n, y_n): y~_n ~ Concrete(l(x_n)) serves only the x->y loss;
      z_n ~ q(z|x_n, y_n) with the one-hot y_n; the decoder reads (y_n, z_n);
      x^_n ~ Bern(mean) serves only the y->x loss.
    - unlabeled x_m: y~_m ~ Concrete(l(x_m)) feeds the encoder and the decoder.
    - unfeatured (y_k, z_k): x^_k ~ p(x|y_k, z_k); the classifier reads x^_k.
      For 'eq17', the encoder's (mu, sigma)(x^_k, y_k) and the observed z_k
      mapped back through the flow give log q(z_k|x^_k, y_k).
    """
    coefficients = _check_options(coefficients, reverse_elbo_variant)
    dtype = np.dtype(dtype).type
    p = _cast(as_param_dict(params), dtype)
    b = _cast(OrderedDict((k, batch[k]) for k in BATCH), dtype)
    missing = [name for name, *_ in NOISE if name not in noise]
    if missing:
        raise ValueError(f"missing noise arrays: {missing}")
    n = _cast(OrderedDict((name, noise[name]) for name, *_ in NOISE), dtype)
    out = OrderedDict()

    def encode(prefix, x, y, eps):
        mean, std = encoder_heads(p, x, y)
        z_tilde = mean + std * eps
        out[f"{prefix}/z_mean"], out[f"{prefix}/z_std"], out[f"{prefix}/z_tilde"] = mean, std, z_tilde
        out[f"{prefix}/z"] = flow(z_tilde, z_low, z_high)
        out[f"{prefix}/z_log_det"] = flow_log_det(z_tilde, z_low, z_high, exact_log_det)
        return out[f"{prefix}/z"]

    def classify(prefix, x, uniform=None):
        logits = classifier_logits(p, x)
        out[f"{prefix}/logits"], out[f"{prefix}/y_probs"] = logits, softmax(logits)
        if uniform is not None:
            out[f"{prefix}/y_sample"] = softmax((logits + gumbel(uniform)) / temperature)
            return out[f"{prefix}/y_sample"]

    # labeled
    classify("labeled", b["labeled_x"], n["labeled/gumbel_uniform"])
    z = encode("labeled", b["labeled_x"], b["labeled_y"], n["labeled/gaussian_eps"])
    out["labeled/x_mean"] = decoder_mean(p, b["labeled_y"], z)
    out["labeled/x_sample"] = bernoulli(out["labeled/x_mean"], n["labeled/bernoulli_uniform"])
    # unlabeled
    y_sample = classify("unlabeled", b["unlabeled_x"], n["unlabeled/gumbel_uniform"])
    z = encode("unlabeled", b["unlabeled_x"], y_sample, n["unlabeled/gaussian_eps"])
    out["unlabeled/x_mean"] = decoder_mean(p, y_sample, z)
    # unfeatured (reverse model); intermediates stored in untapped's key order
    x_mean = decoder_mean(p, b["unfeatured_y"], b["unfeatured_z"])
    x_sample = bernoulli(x_mean, n["unfeatured/bernoulli_uniform"])
    classify("unfeatured", x_sample)
    out["unfeatured/x_mean"], out["unfeatured/x_sample"] = x_mean, x_sample
    log_q_z_observed = 0.0
    if reverse_elbo_variant == "eq17":
        mean, std = encoder_heads(p, x_sample, b["unfeatured_y"])
        z_tilde = flow_inverse(b["unfeatured_z"], z_low, z_high)
        log_det = flow_log_det(z_tilde, z_low, z_high, exact_log_det)
        out["unfeatured/z_mean"], out["unfeatured/z_std"] = mean, std
        out["unfeatured/z_tilde"], out["unfeatured/z_log_det"] = z_tilde, log_det
        log_q_z_observed = log_q_z(z_tilde, mean, std, log_det)

    def q_z(prefix):
        return log_q_z(*(out[f"{prefix}/{k}"] for k in ("z_tilde", "z_mean", "z_std", "z_log_det")))

    terms = OrderedDict()
    # (b) -J_f^l: mean_n [log q(z_n|x_n,y_n) - log p(x_n|y_n,z_n)]
    terms["labeled_elbo"] = np.mean(q_z("labeled") - log_bernoulli(b["labeled_x"], out["labeled/x_mean"]))
    # (a) -J_f^u: mean_m [log Conc(y~_m; l(x_m)) + log q(z_m|x_m,y~_m) - log p(x_m|y~_m,z_m)] + log(1 + 1e-5)
    log_q_y = log_concrete(out["unlabeled/y_sample"], out["unlabeled/logits"], temperature)
    terms["unlabeled_elbo"] = (
        np.mean(log_q_y + q_z("unlabeled") - log_bernoulli(b["unlabeled_x"], out["unlabeled/x_mean"]))
        + LOGSUMEXP_CONSTANT
    )
    # (e) -J_r^u: mean_k [log p(x^_k|y_k,z_k) - log Conc(y_k; l(x^_k)) (- log q(z_k|x^_k,y_k) for eq17)]
    log_q_y = log_concrete(b["unfeatured_y"], out["unfeatured/logits"], temperature)
    terms["reverse_elbo"] = np.mean(log_bernoulli(x_sample, x_mean) - log_q_y - log_q_z_observed)
    # (c) J_f^d: mean_n KL(y_n || y~_n), clipped
    terms["x_to_y_loss"] = np.mean(clipped_kl(b["labeled_y"], out["labeled/y_sample"]))
    # (d) J_r^d: mean_n ||x^_n - x_n||_2
    terms["y_to_x_loss"] = np.mean(euclidean(out["labeled/x_sample"], b["labeled_x"]))
    for name, value in terms.items():
        out[f"terms/{name}"] = np.asarray(value, dtype=dtype)
    out["total"] = np.asarray(
        sum(coefficients[t] * terms[t] for t in TERMS if coefficients.get(t, 0.0) != 0.0), dtype=dtype
    )
    return out


def total(params, batch, noise, **options):
    """The total loss (a float in ``options['dtype']``); ``options`` as for :func:`trace`."""
    return trace(params, batch, noise, **options)["total"][()]


#: While :func:`finite_difference_gradients` runs: what :func:`stop_gradient` returned at the unperturbed parameters.
_STOPPED = None


def stop_gradient(value):
    """``value``, held constant by :func:`finite_difference_gradients` (autodiff's stop-gradient).

    Outside finite differences it is ``value``; inside, each call returns what
    the same call (in call order) returned at the unperturbed parameters. The
    model needs none (its Bernoulli samples are piecewise constant anyway); the
    mutation test writes a straight-through sample ``x^ + m - stop_gradient(m)``
    with it.
    """
    if _STOPPED is None:
        return value
    if _STOPPED["recording"]:
        _STOPPED["values"].append(value)
        return value
    _STOPPED["next"] += 1
    return _STOPPED["values"][_STOPPED["next"] - 1]


def finite_difference_gradients(params, batch, noise, entries, step=1e-5, dtype=np.float64, **options):
    """Central differences ``(L(theta + h e) - L(theta - h e)) / 2h`` of the total, in ``dtype`` (float64).

    ``entries`` maps a parameter name to a list of index tuples into that
    parameter; returns ``name -> array`` of derivatives in the same order.
    The step is relative to the entry: ``h = step * max(1, |theta|)``. The
    difference of two totals carries their rounding, ``|L| * 1e-16`` in
    float64, so the quotient carries ``|L| * 1e-16 / h``: in the reference
    bundles' edge section ``|L|`` is in the hundreds and the encoder's std
    head has gradients of 1e-5 to 1e-4, held to a few 1e-9.
    The Bernoulli samples x^ are recomputed at every evaluation, so choose the
    noise (e.g. with :func:`separate_bernoulli_noise`) such that none flips
    under a perturbation of size ``step``. One evaluation at the unperturbed
    parameters records what :func:`stop_gradient` holds constant.
    """
    global _STOPPED
    base = OrderedDict((k, np.array(v, dtype=dtype)) for k, v in as_param_dict(params).items())
    out = OrderedDict()
    _STOPPED = dict(values=[], recording=True, next=0)
    try:
        total(base, batch, noise, dtype=dtype, **options)
        _STOPPED["recording"] = False
        for name, indices in entries.items():
            values = []
            for index in indices:
                index = tuple(np.atleast_1d(index))
                saved = base[name][index]
                h = step * max(1.0, abs(float(saved)))
                base[name][index] = saved + h
                _STOPPED["next"] = 0
                plus = total(base, batch, noise, dtype=dtype, **options)
                base[name][index] = saved - h
                _STOPPED["next"] = 0
                minus = total(base, batch, noise, dtype=dtype, **options)
                base[name][index] = saved
                values.append((plus - minus) / (2.0 * h))
            out[name] = np.array(values, dtype=dtype)
    finally:
        _STOPPED = None
    return out


def separate_bernoulli_noise(params, batch, noise, margin=1e-2, **options):
    """A copy of ``noise`` whose Bernoulli uniforms lie at least ``margin`` from the decoder means.

    Then no Bernoulli sample flips under small changes of the parameters (or
    float32 rounding). The decoder means do not depend on the Bernoulli
    uniforms, so one pass suffices. Moved entries go to ``mean - margin`` if
    that stays positive, else to ``mean + margin``.
    """
    options = dict(options, dtype=np.float64)
    tr = trace(params, batch, noise, **options)
    out = OrderedDict((k, np.array(v)) for k, v in noise.items())
    for source in ("labeled", "unfeatured"):
        key = f"{source}/bernoulli_uniform"
        u, mean = out[key].astype(np.float64), tr[f"{source}/x_mean"]
        close = np.abs(u - mean) < margin
        moved = np.where(mean - margin > 0.0, mean - margin, mean + margin)
        out[key] = np.where(close, moved, u).astype(out[key].dtype)
    return out


# ---------------------------------------------------------------------------
# The optimiser (``S2S_DGM.py:1368-1374``)


def total_norm_rescale(grads, max_norm=5.0, epsilon=1e-7):
    """Lasagne's ``total_norm_constraint``: ``g * clip(norm, 0, max_norm) / (epsilon + norm)``; returns
    (grads, norm)."""
    grads = OrderedDict(grads)
    dtype = next(iter(grads.values())).dtype
    norm = np.sqrt(sum(np.sum(g.astype(dtype) ** 2) for g in grads.values()))
    multiplier = np.clip(norm, 0.0, max_norm) / (epsilon + norm)
    return OrderedDict((k, (g * multiplier).astype(dtype)) for k, g in grads.items()), norm


def initial_adam_state(params, dtype=np.float32):
    """Adam's state at the start of a fit: ``adam/t`` = 0, zero moments ``adam/m/<name>``, ``adam/v/<name>``."""
    params = as_param_dict(params)
    state = OrderedDict([("adam/t", np.asarray(0.0, dtype=dtype))])
    for name, value in params.items():
        state[f"adam/m/{name}"] = np.zeros(np.shape(value), dtype)
        state[f"adam/v/{name}"] = np.zeros(np.shape(value), dtype)
    return state


def adam(params, grads, state, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-4, dtype=np.float32):
    """Lasagne master's Adam, one step; returns (new params, new state).

    ``t += 1``; ``a_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)``; ``m = beta1 m + (1 - beta1) g``;
    ``v = beta2 v + (1 - beta2) g^2``; ``theta -= a_t m / (sqrt(v) + epsilon)`` -- epsilon is
    added to the *uncorrected* sqrt(v), unlike PyTorch's Adam. In float32, ``1 - beta1`` and
    ``1 - beta2`` are float32 subtractions (reference_format.md §7.6).
    """
    dtype = np.dtype(dtype).type
    t = np.asarray(state["adam/t"], dtype=dtype) + 1.0
    a_t = dtype(learning_rate) * np.sqrt(1.0 - dtype(beta2) ** t) / (1.0 - dtype(beta1) ** t)
    new_params, new_state = OrderedDict(), OrderedDict([("adam/t", np.asarray(t, dtype=dtype))])
    for name, theta in as_param_dict(params).items():
        g = np.asarray(grads[name], dtype=dtype)
        m = dtype(beta1) * np.asarray(state[f"adam/m/{name}"], dtype) + (1.0 - dtype(beta1)) * g
        v = dtype(beta2) * np.asarray(state[f"adam/v/{name}"], dtype) + (1.0 - dtype(beta2)) * g**2
        new_params[name] = (np.asarray(theta, dtype) - a_t * m / (np.sqrt(v) + dtype(epsilon))).astype(dtype)
        new_state[f"adam/m/{name}"], new_state[f"adam/v/{name}"] = m.astype(dtype), v.astype(dtype)
    return new_params, new_state


def original_update(params, grads, state=None, learning_rate=0.01, dtype=np.float32, **settings):
    """The original's training update for given gradients of the total (``S2S_DGM.py:1368-1374``).

    Rescale all gradients to total norm <= ``max_norm`` (Lasagne, epsilon 1e-7),
    clip each entry to [-clip_grad, clip_grad], then one Lasagne Adam step.
    ``settings`` override :data:`OPTIMIZER_DEFAULTS`. ``state`` defaults to
    :func:`initial_adam_state`. Returns (new params, new state).
    """
    s = dict(OPTIMIZER_DEFAULTS, **settings)
    dtype = np.dtype(dtype).type
    params = as_param_dict(params)
    state = initial_adam_state(params, dtype) if state is None else state
    grads = OrderedDict((name, np.asarray(grads[name], dtype=dtype)) for name in params)
    grads, _ = total_norm_rescale(grads, dtype(s["max_norm"]), dtype(s["norm_epsilon"]))
    grads = OrderedDict((k, np.clip(g, -dtype(s["clip_grad"]), dtype(s["clip_grad"]))) for k, g in grads.items())
    return adam(params, grads, state, learning_rate, s["beta1"], s["beta2"], s["epsilon"], dtype)
