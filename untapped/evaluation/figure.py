"""Figure 2, digit extraction (paper §3): the decoded one-hot images as a labelled PNG grid."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from untapped.files import atomic_output


def save_digit_grid(images, path, titles=None, suptitle=None):
    """Save images as a labelled PNG grid, five to a row (paper Figure 2).

    ``images`` is (n, 784) or (n, 28, 28), one image per one-hot ``y``; with
    n = 10 the first row holds the labelled dimensions 0-4 and the second
    the free dimensions 5-9. ``titles`` (one per image, default ``y=k``)
    name the panels, for instance ``f"y={k} → {d}"`` with ``d`` the
    recognised digit. As in the original's ``plotting_mnist.imshow``, values
    are clipped to [0, 1] and drawn with ``cmap='gray_r'`` (ink dark on
    white), here on a fixed 0-1 scale so a blank image stays blank.

    The figure is drawn with :class:`matplotlib.figure.Figure` on an Agg
    canvas rather than through ``pyplot``, so it neither needs nor changes
    the process-wide backend. The PNG is written to a temporary file beside
    ``path`` and renamed into place.
    """
    images = np.asarray(images, dtype=np.float64)
    side = int(round(np.sqrt(images[0].size)))
    images = images.reshape(len(images), side, side)
    n = len(images)
    titles = [f"y={k}" for k in range(n)] if titles is None else list(titles)
    if len(titles) != n:
        raise ValueError(f"need one title per image: {n} images, {len(titles)} titles")

    ncols = min(n, 5)
    nrows = -(-n // ncols)
    fig = Figure(
        figsize=(1.6 * ncols, 1.8 * nrows + (0.5 if suptitle else 0.0)),
        dpi=100,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(np.clip(image, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=11)
    for ax in axes:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=13)

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
