"""Where every random draw of the model comes from (paper eqs. 1-2; the original's ``parmesan/layers/sample.py``).

The graph takes each draw as an explicit noise tensor (:data:`NOISE`), fed
by seeded generators in training and by fixed arrays in reference runs, and
turns it into a sample by a reparameterisation (:mod:`parmesan_compat.layers.sample`):

- Concrete: ``y~ = softmax((l + g) / tau)``, ``g = -log(-log(u + 1e-4) + 1e-4)``,
  ``u ~ U(0, 1)`` (Maddison et al. 2016, eq. 6; Jang et al. 2016, eq. 2);
- Gaussian: ``z~ = mu + sigma eps``, ``eps ~ N(0, 1)`` (Kingma & Welling 2013, eq. 10);
- Bernoulli: ``x^ = 1[u < b]``, ``u ~ U(0, 1)``, with zero gradient (as Theano 0.9 sampled).

:func:`draw` makes a noise array's draw from a shared PyTensor generator.
"""

from collections import OrderedDict, namedtuple

import pytensor.tensor as pt

from parmesan_compat.layers.sample import bernoulli_sample, concrete_sample, gaussian_sample, gumbel_from_uniform
from untapped.paper.kernels import PLAIN

__all__ = [
    "NOISE", "NoiseSpec", "bernoulli_sample", "concrete_sample", "draw", "gaussian_sample", "gumbel_from_uniform",
    "noise_key", "symbolic_noise",
]  # fmt: skip

NoiseSpec = namedtuple("NoiseSpec", "source name distribution width")
NoiseSpec.__doc__ = """One noise array the graph consumes: where it goes, what it draws and its shape.

Its shape is (rows of ``source`` in the batch, ``width``).

Attributes
----------
source : str
    The data source whose pass consumes it: 'labeled', 'unlabeled' or 'unfeatured'.
name : str
    The draw: 'gumbel_uniform' (the Concrete sample's), 'gaussian_eps' (the
    encoder's) or 'bernoulli_uniform' (the decoder's).
distribution : str
    'uniform' (U(0,1)) or 'normal' (N(0,1)).
width : str
    The model dimension that is its number of columns: 'n_classes', 'n_latent' or 'n_features'.
"""

#: Every noise array the graph consumes, in the order a port should draw them.
NOISE = (
    NoiseSpec("labeled", "gumbel_uniform", "uniform", "n_classes"),
    NoiseSpec("labeled", "gaussian_eps", "normal", "n_latent"),
    NoiseSpec("labeled", "bernoulli_uniform", "uniform", "n_features"),
    NoiseSpec("unlabeled", "gumbel_uniform", "uniform", "n_classes"),
    NoiseSpec("unlabeled", "gaussian_eps", "normal", "n_latent"),
    NoiseSpec("unfeatured", "bernoulli_uniform", "uniform", "n_features"),
)


def noise_key(spec):
    """``<source>/<name>``: how the graph and the reference bundles name a noise array.

    Parameters
    ----------
    spec : NoiseSpec
        One entry of :data:`NOISE`.

    Returns
    -------
    str
        E.g. ``'labeled/gumbel_uniform'``.
    """
    return f"{spec.source}/{spec.name}"


def symbolic_noise():
    """Symbolic float matrices for every noise array, keyed ``source/name``.

    Returns
    -------
    OrderedDict of str to TensorVariable
        One matrix per entry of :data:`NOISE`, in its order, named by its key;
        each is (rows of the source, width), e.g. ``'labeled/gaussian_eps'``: (rows, n_latent).
    """
    return OrderedDict((noise_key(spec), pt.matrix(noise_key(spec))) for spec in NOISE)


def draw(rng, distribution, size, kernels=PLAIN):
    """``(next_rng, draw)`` from the shared generator ``rng``: float32 U[0, 1) (``kernels.uniform``) or N(0, 1).

    Parameters
    ----------
    rng : RandomGeneratorSharedVariable
        A shared PyTensor generator (``pytensor.tensor.random.shared_rng``).
    distribution : str
        A :class:`NoiseSpec`'s ``distribution``: 'uniform', or anything else for 'normal'.
    size : tuple of int or of scalar TensorVariable
        The draw's shape, (rows of the source, width).
    kernels : PlainKernels or FastKernels, optional
        Draws the uniforms (:mod:`untapped.paper.kernels`); default ``PLAIN``.

    Returns
    -------
    next_rng : RandomGeneratorVariable
        The generator's state after the draw (to update ``rng`` with).
    draw : TensorVariable, shape ``size``
        The noise: float32 uniforms, or standard normals in ``floatX``.
    """
    if distribution == "uniform":
        return kernels.uniform(rng, size)
    return rng.normal(0.0, 1.0, size=size)
