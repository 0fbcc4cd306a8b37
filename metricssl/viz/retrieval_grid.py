"""A picture of retrieval results: each query followed by its nearest neighbours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..core.validation import check_number
from ._common import check_finite, check_path, new_figure, save_png, to_numpy

MATCH_COLOR = "#2ca02c"  # green: neighbour has the query's label
MISMATCH_COLOR = "#d62728"  # red: it does not
QUERY_COLOR = "#1f1f1f"
NEUTRAL_COLOR = "#7f7f7f"  # no labels given


def retrieval_grid(
    query_images,
    neighbor_images,
    query_labels,
    neighbor_labels,
    path,
    *,
    class_names: Sequence[str] | Mapping | None = None,
    title: str | None = None,
    thumb_inches: float = 1.1,
    dpi: int = 100,
    frame_width: float = 4.0,
) -> Path:
    """Save a grid of queries (first column) and their top-k neighbours as a PNG.

    Each neighbour is framed green when its label equals its query's label and red
    otherwise, so retrieval mistakes stand out at a glance.

    Args:
        query_images: Q images as (Q, H, W), (Q, C, H, W) or (Q, H, W, C) with C in
            {1, 3, 4}; uint8 (0..255) or float. Floats inside [0, 1] are shown as they are,
            other floats (e.g. normalised inputs) are min-max scaled per image.
        neighbor_images: (Q, K, ...) the K neighbours of each query, same image layout.
        query_labels: (Q,) labels, or ``None`` (then frames are grey).
        neighbor_labels: (Q, K) labels, or ``None`` together with ``query_labels``.
        path: where to write the PNG (parent folders are created); written atomically.
        class_names: optional names shown under each thumbnail, a sequence indexed by
            integer label or a mapping label -> name.
        title: optional figure title.
        thumb_inches, dpi: size of one thumbnail in inches, and resolution.
        frame_width: frame line width in points.

    A (3, H, 3)-like image is ambiguous; channels-first is assumed, as torch uses it.

    Example:
        >>> import torch
        >>> from metricssl.viz.retrieval_grid import retrieval_grid
        >>> q = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
        >>> nn = torch.randint(0, 255, (4, 5, 1, 28, 28), dtype=torch.uint8)
        >>> retrieval_grid(q, nn, torch.arange(4), torch.randint(0, 4, (4, 5)), "/tmp/g.png")
        PosixPath('/tmp/g.png')
    """
    path = check_path(path)
    check_number("thumb_inches", thumb_inches, low=0, low_inclusive=False)
    check_number("dpi", dpi, low=10, integer=True)
    check_number("frame_width", frame_width, low=0)

    queries = to_numpy(query_images, "query_images")
    neighbors = to_numpy(neighbor_images, "neighbor_images")
    if queries.ndim not in (3, 4):
        raise ValueError(
            f"query_images must be (Q, H, W), (Q, C, H, W) or (Q, H, W, C), got {queries.shape}"
        )
    if neighbors.ndim != queries.ndim + 1:
        raise ValueError(
            f"neighbor_images must be (Q, K, <image>) with the query image layout; got "
            f"query_images {queries.shape} and neighbor_images {neighbors.shape}"
        )
    n_queries, k = neighbors.shape[:2]
    if queries.shape[0] != n_queries:
        raise ValueError(
            f"query_images has {queries.shape[0]} images but neighbor_images has {n_queries} rows"
        )
    if n_queries == 0 or k == 0:
        raise ValueError(f"need at least one query and one neighbour, got Q={n_queries}, K={k}")
    if queries.shape[1:] != neighbors.shape[2:]:
        raise ValueError(
            f"query images {queries.shape[1:]} and neighbour images {neighbors.shape[2:]} "
            f"differ in shape"
        )
    queries = _to_display(queries, "query_images")
    neighbors = _to_display(
        neighbors.reshape(n_queries * k, *neighbors.shape[2:]), "neighbor_images"
    )
    neighbors = neighbors.reshape(n_queries, k, *neighbors.shape[1:])
    colors, q_text, n_text = _frames_and_names(
        query_labels, neighbor_labels, n_queries, k, class_names
    )

    # A narrow spacer column separates the query from its neighbours.
    n_cols = k + 2
    width_ratios = [1.0, 0.15] + [1.0] * k
    text_space = 0.25 if q_text is not None else 0.0
    fig = new_figure(
        (thumb_inches * (k + 1.15), (thumb_inches + text_space) * n_queries + 0.4), dpi
    )
    # Matplotlib's fixed margins leave a wide band under the title of a tall grid.
    fig.set_layout_engine("constrained")
    axes = fig.subplots(
        n_queries, n_cols, squeeze=False, gridspec_kw={"width_ratios": width_ratios}
    )
    for row in range(n_queries):
        axes[row, 1].set_axis_off()
        _thumbnail(axes[row, 0], queries[row], QUERY_COLOR, frame_width)
        if q_text is not None:
            axes[row, 0].set_xlabel(q_text[row], fontsize=7)
        for j in range(k):
            ax = axes[row, j + 2]
            _thumbnail(ax, neighbors[row, j], colors[row][j], frame_width)
            if n_text is not None:
                ax.set_xlabel(n_text[row][j], fontsize=7, color=colors[row][j])
    axes[0, 0].set_title("query", fontsize=9)
    for j in range(k):
        axes[0, j + 2].set_title(f"#{j + 1}", fontsize=9)
    if title is not None:
        fig.suptitle(str(title))
    return save_png(fig, path)


def _thumbnail(ax, image: np.ndarray, color: str, frame_width: float) -> None:
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(frame_width)


def _to_display(images: np.ndarray, name: str) -> np.ndarray:
    """(N, ...) images -> float (N, H, W) or (N, H, W, C) in [0, 1]."""
    if images.ndim == 4:
        if images.shape[1] in (1, 3, 4):
            images = np.moveaxis(images, 1, -1)
        elif images.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"{name}: cannot find a channel axis of size 1, 3 or 4 in image shape "
                f"{images.shape[1:]}"
            )
        if images.shape[-1] == 1:
            images = images[..., 0]
    if images.dtype == np.bool_:
        return images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"{name}: integer images must lie in 0..255")
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"{name} must be integer or float images, got dtype {images.dtype}")
    check_finite(images, name)
    images = images.astype(np.float32)
    if images.size == 0 or (images.min() >= 0.0 and images.max() <= 1.0):
        return images
    axes = tuple(range(1, images.ndim))
    lo = images.min(axis=axes, keepdims=True)
    span = images.max(axis=axes, keepdims=True) - lo
    # A constant image becomes mid-grey instead of a division by zero.
    return np.where(span > 0, (images - lo) / np.where(span > 0, span, 1.0), 0.5)


def _frames_and_names(query_labels, neighbor_labels, n_queries, k, class_names):
    if (query_labels is None) != (neighbor_labels is None):
        raise ValueError("pass both query_labels and neighbor_labels, or neither")
    if query_labels is None:
        return [[NEUTRAL_COLOR] * k for _ in range(n_queries)], None, None
    q = to_numpy(query_labels, "query_labels")
    nb = to_numpy(neighbor_labels, "neighbor_labels")
    if q.shape != (n_queries,):
        raise ValueError(f"query_labels must have shape ({n_queries},), got {q.shape}")
    if nb.shape != (n_queries, k):
        raise ValueError(f"neighbor_labels must have shape ({n_queries}, {k}), got {nb.shape}")
    colors = np.where(nb == q[:, None], MATCH_COLOR, MISMATCH_COLOR).tolist()
    return (
        colors,
        [_name(v, class_names) for v in q],
        [[_name(v, class_names) for v in r] for r in nb],
    )


def _name(label, class_names) -> str:
    value = label.item() if hasattr(label, "item") else label
    if class_names is None:
        return str(value)
    if isinstance(class_names, Mapping):
        return str(class_names.get(value, value))
    if isinstance(value, (int, np.integer)) and 0 <= value < len(class_names):
        return str(class_names[value])
    raise ValueError(f"label {value!r} has no entry in class_names (length {len(class_names)})")
