"""2-D (or k-D) projections of embeddings for plotting: UMAP, t-SNE and PCA.

UMAP runs through umap-learn, t-SNE through openTSNE, PCA through scikit-learn. All three
are set up so that 70,000 points project on a 2-core machine without running out of memory:
UMAP uses its ``low_memory`` nearest-neighbour descent, t-SNE switches from Barnes-Hut to the
FFT-interpolated gradient above 10,000 points.
"""

from __future__ import annotations

import os

import numpy as np

from ..core.validation import check_choice, check_number
from ._common import check_finite, require, to_numpy

METHODS = ("umap", "tsne", "pca")
METRICS = ("euclidean", "cosine")

# Below this size Barnes-Hut is faster than FFT interpolation (openTSNE's own rule of thumb).
_TSNE_FFT_MIN_POINTS = 10_000
# Below this size one thread is faster than several (see n_jobs in project's docstring).
_PARALLEL_MIN_POINTS = 10_000


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def project(
    embeddings,
    method: str = "umap",
    n_components: int = 2,
    seed: int | None = 0,
    *,
    metric: str = "euclidean",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    perplexity: float = 30.0,
    n_jobs: int | None = None,
    verbose: bool = False,
) -> np.ndarray:
    """Project ``embeddings`` (N, D) to ``n_components`` dimensions for plotting.

    Args:
        embeddings: a (N, D) torch tensor (any device, any float dtype) or numpy array.
        method: ``"umap"`` (McInnes, Healy and Melville, "UMAP: Uniform Manifold
            Approximation and Projection for Dimension Reduction", arXiv 2018), ``"tsne"``
            (van der Maaten and Hinton, "Visualizing Data using t-SNE", JMLR 2008; run with
            openTSNE, Poličar, Stražar and Zupan, J. Stat. Softw. 2024) or ``"pca"``.
        n_components: output dimension (2 for a scatter plot).
        seed: random seed; the same seed gives the same projection. ``None`` lets UMAP use
            all cores but makes it non-deterministic (umap-learn is single-threaded when
            seeded).
        metric: ``"euclidean"`` or ``"cosine"`` (for PCA, cosine L2-normalises rows first).
        n_neighbors, min_dist: UMAP's neighbourhood size and minimum spacing.
        perplexity: t-SNE perplexity; lowered to (N - 1) / 3 when N is too small for it.
        n_jobs: threads for t-SNE and unseeded UMAP. Default: one thread below 10,000
            points (thread start-up and synchronisation cost more than they save there:
            measured 10x more CPU for t-SNE on 90 points, 1.7x on 4,000, with 2 threads on 2
            cores), else every core this process may use.
        verbose: let the backend print its progress.

    Returns:
        float32 numpy array of shape (N, n_components).

    Example:
        >>> import torch
        >>> from metricssl.viz.projection import project
        >>> points = project(torch.randn(500, 64), method="pca")
        >>> points.shape
        (500, 2)
    """
    check_choice("method", method, METHODS)
    check_choice("metric", metric, METRICS)
    check_number("n_components", n_components, low=1, integer=True)
    check_number("seed", seed, low=0, integer=True, allow_none=True)
    check_number("n_neighbors", n_neighbors, low=2, integer=True)
    check_number("min_dist", min_dist, low=0)
    check_number("perplexity", perplexity, low=0, low_inclusive=False)
    check_number("n_jobs", n_jobs, low=1, integer=True, allow_none=True)
    if not isinstance(verbose, bool):
        raise TypeError(f"verbose must be a bool, got {verbose!r}")

    x = to_numpy(embeddings, "embeddings")
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2D (N, D), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"embeddings must hold numbers, got dtype {x.dtype}")
    n, d = x.shape
    if n < 3:
        raise ValueError(f"embeddings needs at least 3 rows to project, got {n}")
    if d == 0:
        raise ValueError("embeddings has 0 columns")
    check_finite(x, "embeddings")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if n_jobs is None:
        n_jobs = 1 if n < _PARALLEL_MIN_POINTS else _usable_cores()

    if method == "pca":
        out = _pca(x, n_components, seed, metric)
    elif method == "umap":
        out = _umap(x, n_components, seed, metric, n_neighbors, min_dist, n_jobs, verbose)
    else:
        out = _tsne(x, n_components, seed, metric, perplexity, n_jobs, verbose)
    return np.ascontiguousarray(out, dtype=np.float32)


def _pca(x, n_components, seed, metric):
    if n_components > min(x.shape):
        raise ValueError(
            f"n_components={n_components} is larger than min(N, D)={min(x.shape)} for PCA"
        )
    decomposition = require("sklearn.decomposition", "scikit-learn", "project(method='pca')")
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    # float64 for the decomposition: float32 covariance loses digits on large N.
    pca = decomposition.PCA(n_components=n_components, random_state=seed)
    return pca.fit_transform(x.astype(np.float64))


def _umap(x, n_components, seed, metric, n_neighbors, min_dist, n_jobs, verbose):
    umap = require("umap", "umap-learn", "project(method='umap')")
    n = x.shape[0]
    reducer = umap.UMAP(
        n_components=n_components,
        n_neighbors=min(n_neighbors, n - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        # umap-learn is single-threaded when seeded; saying so avoids its override warning.
        n_jobs=1 if seed is not None else n_jobs,
        low_memory=True,
        # Spectral init needs more points than components + 1 to solve its eigenproblem.
        init="spectral" if n > n_components + 2 * n_neighbors else "random",
        verbose=verbose,
    )
    return reducer.fit_transform(x)


def _tsne(x, n_components, seed, metric, perplexity, n_jobs, verbose):
    open_tsne = require("openTSNE", "openTSNE", "project(method='tsne')")
    n = x.shape[0]
    # FFT interpolation only exists for 1-2 output dimensions.
    use_fft = n >= _TSNE_FFT_MIN_POINTS and n_components <= 2
    tsne = open_tsne.TSNE(
        n_components=n_components,
        perplexity=min(float(perplexity), (n - 1) / 3),
        metric=metric,
        n_jobs=n_jobs,
        random_state=seed,
        negative_gradient_method="fft" if use_fft else "bh",
        verbose=verbose,
    )
    return np.asarray(tsne.fit(x))
