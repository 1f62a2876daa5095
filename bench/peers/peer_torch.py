"""The training step in PyTorch, eager or ``torch.compile``, written from the paper and ``docs/reference_format.md``.

As a PyTorch user would write it: the three networks as ``nn.Module``s of
``nn.Linear`` layers (whose weights are ``(fan_out, fan_in)``, the bundle's
``W`` transposed), the passes and terms in the model's ``forward``, the
gradient by ``backward()``, and the update (Lasagne's rescale, clip and Adam,
which ``torch.optim.Adam`` is not: its epsilon is added to the bias-corrected
root) as a function over the parameters and their state under
``torch.no_grad``. float32 throughout; ``torch.set_num_threads`` gives every
core. The compiled peer wraps the model's forward (noise drawn inside it) and
the update in ``torch.compile``; the backward is AOTAutograd's compiled graph.

The step gathers each source's rows inside the forward; the unfeatured source
(10 (y, z) pairs in the paper's setup) is decoded once per distinct row and
its decoder means gathered to the batch, the same work untapped's step does.
"""

import math
import os

import numpy as np
import torch
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
    bundle_datasets,
)  # fmt: skip
from torch import nn
from torch.nn import functional as F

LOG_2PI = math.log(2 * math.pi)
#: The unlabeled bound's constant (paper eq. 4: the original's single-sample logsumexp).
LOG_1P_EPS = float(np.log(np.float32(1) + np.float32(1e-5)))
#: Adam's constants rounded to float32 first, ``1 - beta`` a float32 subtraction (reference_format.md §7.6).
BETA1, BETA2 = float(np.float32(OPTIMIZER["beta1"])), float(np.float32(OPTIMIZER["beta2"]))
ONE_MINUS_BETA1 = float(np.float32(1) - np.float32(OPTIMIZER["beta1"]))
ONE_MINUS_BETA2 = float(np.float32(1) - np.float32(OPTIMIZER["beta2"]))


def versions():
    return {"torch": torch.__version__}


def mlp(sizes):
    """tanh hidden layers of ``sizes[1:-1]``, named ``hidden1``, ``hidden2`` as the bundle's."""
    return nn.ModuleDict({f"hidden{i + 1}": nn.Linear(a, b) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))})


def hidden(layers, h):
    for layer in layers.values():
        h = torch.tanh(layer(h))
    return h


# ---------------------------------------------------------------------------
# Networks and samplers (paper eqs. 1-2, App. A; reference_format.md §7.2)


class Classifier(nn.Module):
    """q(y|x)'s logits: two tanh layers of 50, then 10 logits."""

    def __init__(self):
        super().__init__()
        self.layers = mlp([784, 50, 50])
        self.logits = nn.Linear(50, N_CLASSES)

    def forward(self, x):
        return self.logits(hidden(self.layers, x))


class Encoder(nn.Module):
    """q(z|x,y): z~ = mu + sigma eps, z = the logistic flow of z~ (App. A, eq. 10), and log q(z|x,y)."""

    def __init__(self):
        super().__init__()
        self.layers = mlp([794, 10, 10])
        self.mean = nn.Linear(10, 2)
        self.std = nn.Linear(10, 2)

    def forward(self, x, y, eps):
        h = hidden(self.layers, torch.cat([x, y], dim=1))
        mean, std = self.mean(h), F.softplus(self.std(h))
        z_tilde = mean + std * eps
        s = torch.sigmoid(z_tilde)
        z = Z_LOW + (Z_HIGH - Z_LOW) * s
        # The log-determinant as the original codes it (App. A, eq. 16 with a 1e-5 guard).
        log_det = torch.log(1e-5 + torch.prod((Z_HIGH - Z_LOW) * s * (1 - s), dim=1))
        # log N(z~; mu, sigma) with z~ - mu written as sigma eps (§7.4).
        sd = std + 1e-5
        log_normal = torch.sum(-0.5 * LOG_2PI - torch.log(sd) - (std * eps) ** 2 / (2 * sd**2), dim=1)
        return dict(z_mean=mean, z_std=std, z_tilde=z_tilde, z=z, z_log_det=log_det), log_normal - log_det


class Decoder(nn.Module):
    """p(x|y,z)'s Bernoulli means: two tanh layers of 250 and 500, then a sigmoid (eq. 1)."""

    def __init__(self):
        super().__init__()
        self.layers = mlp([12, 250, 500])
        self.mean = nn.Linear(500, 784)

    def forward(self, y, z):
        return torch.sigmoid(self.mean(hidden(self.layers, torch.cat([y, z], dim=1))))


def concrete_sample(logits, u):
    """y~ = softmax((l + g) / tau), g = -log(-log(u + 1e-4) + 1e-4) (eq. 2)."""
    g = -torch.log(-torch.log(u + 1e-4) + 1e-4)
    return torch.softmax((logits + g) / TEMPERATURE, dim=-1)


def bernoulli_sample(mean, u):
    """x^ = 1[u < mean], carrying no gradient (as Theano 0.9's cast)."""
    return (u < mean.detach()).to(mean.dtype)


# ---------------------------------------------------------------------------
# Densities and terms (eqs. 3, 4, 7, 17; reference_format.md §7.4)


def log_bernoulli(x, mean):
    m = torch.clamp(mean, BERN_LOW, BERN_HIGH)
    return torch.sum(x * torch.log(m) + (1 - x) * torch.log(1 - m), dim=1)


def log_concrete(y, logits):
    """Maddison et al.'s Concrete density, its last sum in log space (§7.4)."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_y = torch.log(y)
    c = N_CLASSES
    return (
        math.lgamma(c) + (c - 1) * math.log(TEMPERATURE)
        - c * torch.logsumexp(log_p - TEMPERATURE * log_y, dim=1)
        + torch.sum(log_p - (TEMPERATURE + 1) * log_y, dim=1)
    )  # fmt: skip


def x_to_y_loss(y, y_sample):
    """J_f^d as coded: a KL divergence clipped at 1e-6, with the simplex's last coordinate (eq. 7)."""
    a, q = torch.clamp(y, 1e-6, 1), torch.clamp(y_sample, 1e-6, 1)
    a_last = torch.clamp(1 - torch.sum(y, dim=1), 1e-6, 1)
    q_last = torch.clamp(1 - torch.sum(y_sample, dim=1), 1e-6, 1)
    return torch.mean(
        torch.sum(a * (torch.log(a) - torch.log(q)), dim=1) + a_last * (torch.log(a_last) - torch.log(q_last))
    )


class SSDGM(nn.Module):
    """The three networks, and the weighted total of ``terms`` (eq. 8) over the three passes."""

    def __init__(self, terms):
        super().__init__()
        self.terms = terms
        self.classifier, self.encoder, self.decoder = Classifier(), Encoder(), Decoder()

    def named_bundle_params(self):
        """``(bundle name, nn.Parameter)`` in the bundle's order; the bundle's ``W`` is ``weight.T``."""
        modules = dict(self.named_modules())
        for name in PARAM_NAMES:
            net, layer, kind = name.split("/")
            path = f"{net}.layers.{layer}" if layer.startswith("hidden") else f"{net}.{layer}"
            yield name, (modules[path].weight if kind == "W" else modules[path].bias), kind == "W"

    def load_bundle_params(self, params):
        with torch.no_grad():
            for name, p, transposed in self.named_bundle_params():
                value = torch.from_numpy(np.asarray(params[name], dtype=np.float32))
                p.copy_(value.T if transposed else value)

    def forward(self, batch, noise, unfeatured_index=None):
        """``(total, terms, forward arrays)``; see ``peer_jax.loss`` for the unfeatured rows."""
        forward, values = {}, {}
        # Labeled pass (eq. 3): q(y|x) for the x->y loss, z ~ q(z|x,y), x ~ p(x|y,z).
        lx, ly = batch["labeled_x"], batch["labeled_y"]
        logits = self.classifier(lx)
        y_sample = concrete_sample(logits, noise["labeled/gumbel_uniform"])
        z_values, log_q_z = self.encoder(lx, ly, noise["labeled/gaussian_eps"])
        x_mean = self.decoder(ly, z_values["z"])
        x_sample = bernoulli_sample(x_mean, noise["labeled/bernoulli_uniform"])
        forward.update({f"labeled/{k}": v for k, v in dict(
            logits=logits, y_probs=torch.softmax(logits, -1), y_sample=y_sample, **z_values, x_mean=x_mean,
            x_sample=x_sample,
        ).items()})  # fmt: skip
        values["labeled_elbo"] = torch.mean(log_q_z - log_bernoulli(lx, x_mean))
        values["x_to_y_loss"] = x_to_y_loss(ly, y_sample)
        values["y_to_x_loss"] = torch.mean(torch.sqrt(torch.sum((x_sample - lx) ** 2, dim=1)))

        # Unlabeled pass (eq. 4): y~ ~ q(y|x), z ~ q(z|x,y~), the same y~ decoded.
        ux = batch["unlabeled_x"]
        logits = self.classifier(ux)
        y_sample = concrete_sample(logits, noise["unlabeled/gumbel_uniform"])
        z_values, log_q_z = self.encoder(ux, y_sample, noise["unlabeled/gaussian_eps"])
        x_mean = self.decoder(y_sample, z_values["z"])
        forward.update({f"unlabeled/{k}": v for k, v in dict(
            logits=logits, y_probs=torch.softmax(logits, -1), y_sample=y_sample, **z_values, x_mean=x_mean
        ).items()})  # fmt: skip
        values["unlabeled_elbo"] = (
            torch.mean(log_concrete(y_sample, logits) + log_q_z - log_bernoulli(ux, x_mean)) + LOG_1P_EPS
        )

        if "reverse_elbo" in self.terms:
            # Unfeatured pass (App. B, eq. 17 as coded): decode the observed (y, z), read y back from x^.
            uy, uz = batch["unfeatured_y"], batch["unfeatured_z"]
            x_mean = self.decoder(uy, uz)
            if unfeatured_index is not None:
                x_mean, uy = x_mean[unfeatured_index], uy[unfeatured_index]
            x_sample = bernoulli_sample(x_mean, noise["unfeatured/bernoulli_uniform"])
            logits = self.classifier(x_sample)
            forward.update({"unfeatured/logits": logits, "unfeatured/y_probs": torch.softmax(logits, -1),
                            "unfeatured/x_mean": x_mean, "unfeatured/x_sample": x_sample})  # fmt: skip
            values["reverse_elbo"] = torch.mean(log_bernoulli(x_sample, x_mean) - log_concrete(uy, logits))

        values = {t: values[t] for t in self.terms}
        total = sum(c * values[t] for t, c in self.terms.items() if c != 0.0)
        return total, values, forward


# ---------------------------------------------------------------------------
# The update (Algorithm 1's Gamma; reference_format.md §7.6)


def init_adam(params):
    return dict(t=torch.zeros(()), m=[torch.zeros_like(p) for p in params], v=[torch.zeros_like(p) for p in params])


@torch.no_grad()
def update(params, grads, adam, learning_rate):
    """Rescale the gradient to total norm <= 5, clip it to [-1, 1], then one step of Lasagne's Adam (in place)."""
    o = OPTIMIZER
    norm = torch.sqrt(sum(torch.sum(g * g) for g in grads))
    scale = torch.clamp(norm, 0, o["max_norm"]) / (o["norm_epsilon"] + norm)
    adam["t"] += 1
    a_t = learning_rate * torch.sqrt(1 - BETA2 ** adam["t"]) / (1 - BETA1 ** adam["t"])
    for p, g, m, v in zip(params, grads, adam["m"], adam["v"]):
        g = torch.clamp(g * scale, -o["clip_grad"], o["clip_grad"])
        m.mul_(BETA1).add_(ONE_MINUS_BETA1 * g)
        v.mul_(BETA2).add_(ONE_MINUS_BETA2 * g * g)
        p.sub_(a_t * m / (torch.sqrt(v) + o["epsilon"]))


def draw_noise(rows, terms):
    """The noise the step's passes consume (§4.1), drawn with PyTorch's own generator."""
    noise = {
        "labeled/gumbel_uniform": torch.rand(rows, N_CLASSES), "labeled/gaussian_eps": torch.randn(rows, 2),
        "labeled/bernoulli_uniform": torch.rand(rows, 784), "unlabeled/gumbel_uniform": torch.rand(rows, N_CLASSES),
        "unlabeled/gaussian_eps": torch.randn(rows, 2),
    }  # fmt: skip
    if "reverse_elbo" in terms:
        noise["unfeatured/bernoulli_uniform"] = torch.rand(rows, 784)
    return noise


def batch_of(data, index):
    """The step's batch: the labeled and unlabeled rows gathered, the unfeatured source whole (decoded per row)."""
    return {
        "labeled_x": data["labeled_x"][index["labeled"]], "labeled_y": data["labeled_y"][index["labeled"]],
        "unlabeled_x": data["unlabeled_x"][index["unlabeled"]],
        "unfeatured_y": data["unfeatured_y"], "unfeatured_z": data["unfeatured_z"],
    }  # fmt: skip


class Trainer:
    """The benchmark's training step on one model's sources: ``step(index) -> total``."""

    def __init__(self, model, params, data, seed=0, compiled=False):
        torch.set_num_threads(os.cpu_count())
        torch.manual_seed(seed)
        self.name = "PyTorch compile" if compiled else "PyTorch eager"
        self.model = SSDGM({t: COEFFICIENTS[model][t] for t in active_terms(model)})
        self.model.load_bundle_params(params)
        self.params = list(self.model.parameters())
        self.adam = init_adam(self.params)
        self.data = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in data.items()}
        self.lr = torch.tensor(LEARNING_RATE, dtype=torch.float32)
        self._loss = torch.compile(self._train_loss) if compiled else self._train_loss
        self._update = torch.compile(update) if compiled else update

    def _train_loss(self, data, index):
        noise = draw_noise(index["labeled"].shape[0], self.model.terms)
        total, values, _ = self.model(batch_of(data, index), noise, index["unfeatured"])
        return total, values

    def step(self, index):
        index = {s: torch.from_numpy(np.asarray(i, dtype=np.int64)) for s, i in index.items()}
        total, _ = self._loss(self.data, index)
        for p in self.params:
            p.grad = None
        total.backward()
        self._update(self.params, [p.grad for p in self.params], self.adam, self.lr)
        return total.item()


def first_step(bundle, compiled=False):
    """The datasets of a reference bundle a port computes (§3), by name, with this step's own code."""
    torch.set_num_threads(os.cpu_count())
    model = SSDGM(dict(COEFFICIENTS[bundle["model"]]))
    forward_fn = torch.compile(model) if compiled else model
    update_fn = torch.compile(update) if compiled else update
    lr = torch.tensor(LEARNING_RATE, dtype=torch.float32)
    params = list(model.parameters())

    def tensors(arrays):
        return {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}

    def by_name(values):
        """``{bundle name: array}`` of per-parameter tensors given in ``model.parameters()`` order."""
        position = {id(p): i for i, p in enumerate(params)}
        return {
            name: (values[position[id(p)]].T if transposed else values[position[id(p)]]).detach().numpy().copy()
            for name, p, transposed in model.named_bundle_params()
        }

    def at(initial, batch, noise):
        """The total, terms, forward arrays and gradient at ``initial``, then one update from a fresh Adam state."""
        model.load_bundle_params(initial)
        model.zero_grad(set_to_none=True)
        total, values, forward = forward_fn(tensors(batch), tensors(noise))
        total.backward()
        grads = [p.grad.clone() for p in params]
        adam = init_adam(params)
        update_fn(params, [p.grad for p in params], adam, lr)
        state = by_name([p.detach() for p in params]), adam
        return (
            total.detach(),
            {k: v.detach() for k, v in values.items()},
            {k: v.detach() for k, v in forward.items()},
            by_name(grads),
            state,
        )

    out = {}
    for prefix, section in (("", bundle), ("edge/", bundle["edge"])):
        total, values, forward, grads, _ = at(
            section["params"] if prefix else bundle["params"], section["batch"], section["noise"]
        )
        out.update(bundle_datasets(prefix, total, values, forward, grads))
    if bundle["step_noise"] is not None:
        total, _, _, grads, (new, adam) = at(bundle["params"], bundle["batch"], bundle["step_noise"])
        out.update(bundle_datasets("steps/1/", total, gradients=grads))
        out.update(_state("steps/1/", new, adam, by_name))
    for case, given in bundle["updates"].items():
        model.load_bundle_params(bundle["params"])
        adam = init_adam(params)
        grads = by_name_inverse(model, given)
        update_fn(params, grads, adam, lr)
        out.update(_state(f"edge/updates/{case}/", by_name([p.detach() for p in params]), adam, by_name))
    return out


def by_name_inverse(model, arrays):
    """Per-parameter tensors in ``model.parameters()`` order from ``{bundle name: array}``."""
    found = {id(p): (name, transposed) for name, p, transposed in model.named_bundle_params()}
    out = []
    for p in model.parameters():
        name, transposed = found[id(p)]
        value = torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))
        out.append((value.T if transposed else value).contiguous())
    return out


def _state(prefix, params, adam, by_name):
    out = {f"{prefix}params/{n}": v for n, v in params.items()}
    out[f"{prefix}adam/t"] = adam["t"].numpy()
    for k in ("m", "v"):
        out.update({f"{prefix}adam/{k}/{n}": v for n, v in by_name(adam[k]).items()})
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
