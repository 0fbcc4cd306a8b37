"""Scatter plot of 2-D points coloured by class, saved as a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..core.validation import check_number
from ._common import check_finite, check_path, new_figure, require, save_png, to_numpy


def scatter_plot(
    points_2d,
    labels=None,
    *,
    path,
    title: str | None = None,
    class_names: Sequence[str] | Mapping | None = None,
    marker_size: float | None = None,
    alpha: float | None = None,
    figsize: tuple[float, float] = (8.0, 8.0),
    dpi: int = 150,
    max_legend_classes: int = 30,
    seed: int = 0,
) -> Path:
    """Save a scatter plot of ``points_2d`` coloured by ``labels`` to the PNG ``path``.

    Built for projections of whole datasets: 70,000 points draw in one rasterised call with
    small, semi-transparent markers, in a shuffled order so no class hides under another.

    Args:
        points_2d: (N, 2) tensor or array, e.g. the output of
            :func:`metricssl.viz.projection.project`.
        labels: optional (N,) class labels (ints or strings); one colour per class from a
            qualitative colormap (tab10, tab20, then tab20b/c; beyond 60 classes colours are
            spread over a continuous map and stop being easy to tell apart).
        path: where to write the PNG (parent folders are created); written atomically.
        title: optional figure title.
        class_names: legend names, either a sequence indexed by integer label or a mapping
            from label to name. Labels without a name are shown as themselves.
        marker_size, alpha: marker area (points^2) and opacity; chosen from N by default.
        figsize, dpi: figure size in inches and resolution.
        max_legend_classes: no legend when there are more classes than this (it would hide
            the plot).
        seed: seed of the drawing order shuffle.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Example:
        >>> import numpy as np
        >>> from metricssl.viz.scatter import scatter_plot
        >>> pts = np.random.randn(1000, 2)
        >>> scatter_plot(pts, np.arange(1000) % 10, path="/tmp/scatter.png")
        PosixPath('/tmp/scatter.png')
    """
    path = check_path(path)
    points = to_numpy(points_2d, "points_2d")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points_2d must have shape (N, 2), got {points.shape}")
    n = points.shape[0]
    if n == 0:
        raise ValueError("points_2d is empty")
    check_finite(points, "points_2d")
    points = points.astype(np.float64, copy=False)
    check_number("marker_size", marker_size, low=0, low_inclusive=False, allow_none=True)
    check_number("alpha", alpha, low=0, high=1, low_inclusive=False, allow_none=True)
    check_number("dpi", dpi, low=10, integer=True)
    check_number("max_legend_classes", max_legend_classes, low=0, integer=True)
    check_number("seed", seed, low=0, integer=True)
    if (
        not isinstance(figsize, (tuple, list))
        or len(figsize) != 2
        or not all(isinstance(v, (int, float)) and v > 0 for v in figsize)
    ):
        raise ValueError(f"figsize must be two positive numbers (width, height), got {figsize!r}")

    if labels is not None:
        labels = to_numpy(labels, "labels")
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"labels must have shape ({n},) to match points_2d, got {labels.shape}"
            )
        classes, codes = np.unique(labels, return_inverse=True)
    else:
        classes, codes = np.zeros(1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    names = _class_names(classes, class_names) if labels is not None else None

    palette = _palette(len(classes))
    if marker_size is None:
        # ~20 for a few hundred points down to a fraction of a point for 70k.
        marker_size = float(np.clip(30_000 / n, 0.3, 20.0))
    if alpha is None:
        alpha = 0.9 if n <= 2_000 else 0.6 if n <= 20_000 else 0.5

    order = np.random.default_rng(seed).permutation(n)
    fig = new_figure(tuple(figsize), dpi)
    ax = fig.add_subplot()
    ax.scatter(
        points[order, 0],
        points[order, 1],
        c=palette[codes[order]],
        s=marker_size,
        alpha=alpha,
        linewidths=0,
        rasterized=True,
    )
    # Projection axes carry no units; ticks would only suggest they do.
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if title is not None:
        ax.set_title(str(title))
    if names is not None and len(classes) <= max_legend_classes:
        lines = require("matplotlib.lines", "matplotlib", "scatter_plot")
        handles = [
            lines.Line2D([], [], marker="o", linestyle="", color=palette[i], markersize=7)
            for i in range(len(classes))
        ]
        ax.legend(
            handles,
            names,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            title="class",
        )
    return save_png(fig, path)


def _class_names(classes: np.ndarray, class_names) -> list[str]:
    if class_names is None:
        return [str(c) for c in classes]
    if isinstance(class_names, Mapping):
        return [str(class_names.get(c.item(), c)) for c in classes]
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise TypeError("class_names must be a sequence of names or a mapping label -> name")
    if not np.issubdtype(classes.dtype, np.integer):
        raise TypeError("class_names as a sequence needs integer labels; pass a mapping instead")
    if classes.min() < 0 or classes.max() >= len(class_names):
        raise ValueError(
            f"labels run from {classes.min()} to {classes.max()} but class_names has "
            f"{len(class_names)} entries"
        )
    return [str(class_names[int(c)]) for c in classes]


def _palette(n_classes: int) -> np.ndarray:
    """(n_classes, 4) RGBA colours, as distinct as a qualitative colormap allows."""
    colormaps = require("matplotlib", "matplotlib", "scatter_plot").colormaps
    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    if n_classes <= 20:
        return colormaps["tab20"](np.arange(n_classes))
    if n_classes <= 60:
        stacked = np.concatenate(
            [colormaps[name](np.arange(20)) for name in ("tab20", "tab20b", "tab20c")]
        )
        return stacked[:n_classes]
    return colormaps["turbo"](np.linspace(0.0, 1.0, n_classes))
