"""The names and defaults a run is made of, stated once: terms, coefficients, models, seed, sizes, schedule, modes.

Plain Python (no PyTensor), so that a command line can list its choices
without loading the numerical stack.

Each term of the loss has a coefficient hyperparameter named after it,
``coeff_<term>`` (:func:`coefficient_param`). Two were named differently
before (``coeff_x_to_y``, ``coeff_y_to_x``); :data:`RENAMED_PARAMS` maps
them, so that checkpoints and run configurations written then still load
(:func:`upgrade_params`). A run's recorded settings called the batch size
``batch`` before; :func:`upgrade_config` brings a whole recorded
configuration up to date.
"""

import dataclasses
from collections import OrderedDict

#: The five terms of the loss: name -> (paper symbol, equation), in logging order.
TERMS = OrderedDict(
    [
        ("labeled_elbo", ("-J_f^l", "eq. 3")),
        ("unlabeled_elbo", ("-J_f^u", "eq. 4")),
        ("reverse_elbo", ("-J_r^u", "eq. 17")),
        ("x_to_y_loss", ("J_f^d", "eq. 7")),
        ("y_to_x_loss", ("J_r^d", "eq. 7")),
    ]
)


def coefficient_param(term):
    """The hyperparameter that weights ``term`` in the total: ``coeff_<term>``."""
    return f"coeff_{term}"


#: The original code's weights (``DEMO_mnist.py:86-88``, ``S2S_DGM.py:1326-1360``): 0.1 on each
#: bound, 1 on the x->y loss, 0.01 on the y->x loss.
CODE_COEFFICIENTS = OrderedDict(
    labeled_elbo=0.1, unlabeled_elbo=0.1, reverse_elbo=0.1, x_to_y_loss=1.0, y_to_x_loss=0.01
)

#: Each model's weights of the five terms. The paper's M2 is untapped
#: "without the J_r term": no reverse bound. The original's M2 (its demo with
#: coeff_y = 0) keeps 0.01 y_to_x_loss in its total; the term has no
#: gradient, so it changes only the logged total (``docs/fidelity.md`` item 27).
PRESETS = OrderedDict(
    untapped=CODE_COEFFICIENTS,
    m2=OrderedDict(CODE_COEFFICIENTS, reverse_elbo=0.0),
)
#: The models a run can train, by name.
MODELS = tuple(PRESETS)
#: Titles of Figure 2, as the original's ``make_plots`` (``plotting_mnist.py:151-156``).
TITLES = {"untapped": "Labels Untapped", "m2": "M2"}

#: The seed of a run that names none: the original's, which gives its initial weights bit for bit
#: (the weights, the split and the random streams of a seed: :mod:`untapped.streams`).
DEFAULT_SEED = 1234
#: The largest seed: seeds are 32-bit, as NumPy's legacy RandomState (the original's initialiser) takes them.
MAX_SEED = 2**32 - 1

#: The original's MNIST model (``DEMO_mnist.py:50-80``): the widths of x, y and z, and each network's tanh layers.
N_FEATURES = 784
N_CLASSES = 10
N_LATENT = 2
CLASSIFIER_HIDDEN = (50, 50)
ENCODER_HIDDEN = (10, 10)
DECODER_HIDDEN = (250, 500)

#: The schedule of a run that names none: 10,000 rows of every source a batch (the original's), the paper's
#: 150 epochs (the original's demo ran 1,000), the five terms evaluated every 10 epochs and after the last.
BATCH_SIZE = 10_000
EPOCHS = 150
EVAL_EVERY = 10

#: Hyperparameters renamed since version 0.1.0: old name -> new name.
RENAMED_PARAMS = {"coeff_x_to_y": "coeff_x_to_y_loss", "coeff_y_to_x": "coeff_y_to_x_loss"}
#: A run's recorded settings (``config.json``, a checkpoint's ``config``) renamed since version 0.1.0: old -> new.
RENAMED_SETTINGS = {"batch": "batch_size"}


def preset_params(model):
    """The ``coeff_*`` hyperparameters of ``model`` (a name in :data:`MODELS`)."""
    if model not in PRESETS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return OrderedDict((coefficient_param(t), w) for t, w in PRESETS[model].items())


def upgrade_params(params):
    """``params`` (a dict of hyperparameters) with the names of :data:`RENAMED_PARAMS` brought up to date."""
    return {RENAMED_PARAMS.get(k, k): v for k, v in params.items()}


def upgrade_config(config):
    """A run's recorded configuration, its old names brought up to date (:data:`RENAMED_SETTINGS`, ``model_params``).

    A configuration that holds an old name beside its new one (a checkpoint
    wrote ``batch`` and ``batch_size``) keeps the new one's value.
    """
    upgraded = {}
    for key, value in config.items():
        new = RENAMED_SETTINGS.get(key, key)
        if new == key or new not in config:
            upgraded[new] = value
    if isinstance(upgraded.get("model_params"), dict):
        upgraded["model_params"] = upgrade_params(upgraded["model_params"])
    return upgraded


#: Compile modes by name: ``c``, PyTensor's C backend with our kernels and
#: rewrites (the default; ``untapped.fast``); ``plain``, the C backend on the
#: paper layer's graph in stock PyTensor ops only; ``numba``, PyTensor's
#: Numba backend on that same plain graph.
MODES = ("c", "plain", "numba")
DEFAULT_MODE = "c"


@dataclasses.dataclass(frozen=True)
class Variant:
    """A reading of the paper that the code does differently (``docs/fidelity.md``), as one run option.

    ``models`` are the models it applies to; ``split`` are
    :func:`untapped.data.make_split` options; :meth:`model_params` gives the
    :class:`untapped.model.SSDGM` hyperparameters on top of the model's preset.
    """

    name: str
    description: str
    models: tuple = MODELS
    params: dict = dataclasses.field(default_factory=dict)
    split: dict = dataclasses.field(default_factory=dict)
    coefficient_scale: float = 1.0

    def model_params(self, model):
        params = dict(self.params)
        if self.coefficient_scale != 1.0:
            params.update({k: v * self.coefficient_scale for k, v in preset_params(model).items()})
        return params


#: The variants a run can take (``run_mnist.py --variant``); ``code`` is the original's code.
VARIANTS = OrderedDict(
    (v.name, v)
    for v in (
        Variant("code", "the original code (the default)"),
        Variant(
            "onehot-prior-z",
            "one-hot unfeatured y, each row with a fresh z ~ p(z) every batch (Alg. 1; fidelity items 10-11), "
            "scored by log Cat(y; q(y|x^)) since the Concrete density of a one-hot y is -inf",
            models=("untapped",),
            params=dict(unfeatured_z="prior", reverse_y_density="categorical"),
            split=dict(unfeatured="onehot"),
        ),
        Variant(
            "prior-z",
            "the code's soft-corner unfeatured y, each row with a fresh z ~ p(z) every batch "
            "(Alg. 1; fidelity item 10)",
            models=("untapped",),
            params=dict(unfeatured_z="prior"),
        ),
        Variant(
            "eq17",
            "the reverse bound as eq. 17 prints it, with + log q(z|x,y) (fidelity item 12)",
            models=("untapped",),
            params=dict(reverse_elbo_variant="eq17"),
        ),
        Variant(
            "paper-weights",
            "App. D's weights, 1 on each bound, 10 on x->y, 0.1 on y->x: the code's times 10 (fidelity items 6-7)",
            coefficient_scale=10.0,
        ),
    )
)
DEFAULT_VARIANT = "code"


def group_name(model, variant=DEFAULT_VARIANT):
    """How summaries and reports group runs: ``m2``, ``untapped``, or ``untapped/<variant>`` for a variant other
    than ``code``."""
    return model if variant in (None, DEFAULT_VARIANT) else f"{model}/{variant}"
