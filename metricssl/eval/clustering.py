"""k-means clustering of embeddings (FAISS) and clustering scores against labels (scikit-learn).

Two k-means:

- :func:`faiss_kmeans`: PML's ``FaissKMeans`` (the ``AccuracyCalculator``'s default, as in
  PML): ``faiss.Kmeans`` with the given fields (PML's calculator: ``niter=20``), FAISS's random
  initial centroids (seed 1234 unless given) and its subsample of 256 points per centroid;
- :func:`cluster`: every point takes part in training and the seeding is greedy k-means++,
  which rarely puts two centroids in one well-separated cluster; the seed is an argument
  (default 0). Used by DeepCluster and ClusterFit, and by the calculator on request
  (``AccuracyCalculator(kmeans_func=KMeansPlusPlus())``).

Scores: normalised mutual information (NMI), adjusted mutual information (AMI; Vinh, Epps and
Bailey, JMLR 2010) and adjusted Rand index (ARI; Hubert and Arabie, Journal of Classification
1985), as computed by ``sklearn.metrics``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.validation import check_number
from .inputs import check_finite, to_tensor

CLUSTERING_SCORES = ("NMI", "AMI", "ARI")
# sklearn.metrics takes seconds to import: it is loaded on first use.
_SCORE_FUNCTIONS = {
    "NMI": "normalized_mutual_info_score",
    "AMI": "adjusted_mutual_info_score",
    "ARI": "adjusted_rand_score",
}


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "k-means clustering (and so the NMI/AMI/ARI metrics) needs FAISS: pip install "
            "'metricssl[cpu]' (or 'metricssl[gpu]'), or exclude those metrics, or pass kmeans_func"
        ) from None
    return faiss


def _float32_rows(embeddings, name: str) -> torch.Tensor:
    """``embeddings`` as a checked float32 (n, d) tensor, on the device it came on."""
    t = to_tensor(embeddings, name)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2D array, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    t = t.to(dtype=torch.float32)
    check_finite(t, name)
    return t


def cluster(
    embeddings,
    n_clusters: int,
    seed: int = 0,
    niter: int = 20,
    use_gpu: bool | None = None,
):
    """k-means on all points: greedy k-means++ seeding, then FAISS's Lloyd iterations.

    Args:
        embeddings: (n, d) tensor (any device) or numpy array.
        n_clusters: number of clusters, 1 <= n_clusters <= n.
        seed: seed of the k-means++ sampling (default 0): the result is reproducible.
        niter: Lloyd iterations (PML uses 20).
        use_gpu: train on GPU; default: when FAISS has a GPU build and CUDA is available.

    Returns:
        ``(assignments, centroids)``: int64 (n,) cluster of each point and float32
        (n_clusters, d); torch tensors on the input's device for a tensor input, numpy arrays
        for a numpy input.

    Example:
        >>> import torch
        >>> from metricssl.eval.clustering import cluster
        >>> x = torch.cat([torch.randn(100, 8), torch.randn(100, 8) + 10])
        >>> assignments, centroids = cluster(x, 2)
        >>> centroids.shape
        torch.Size([2, 8])
    """
    faiss = _import_faiss()
    from ..index.faiss_gpu import faiss_gpu_count

    rows = _float32_rows(embeddings, "embeddings")
    x = np.ascontiguousarray(rows.cpu().numpy())  # FAISS's k-means takes host arrays
    check_number("n_clusters", n_clusters, low=1, high=x.shape[0], integer=True)
    check_number("seed", seed, low=0, high=2**31 - 1, integer=True)
    check_number("niter", niter, low=1, integer=True)
    gpus = faiss_gpu_count()
    if use_gpu is None:
        use_gpu = gpus > 0 and torch.cuda.is_available()
    elif use_gpu and gpus == 0:
        raise ValueError("use_gpu=True needs a FAISS build with GPU support and a CUDA device")
    n, d = x.shape
    generator = torch.Generator().manual_seed(seed)
    # The seeding (n x k distances) runs where the embeddings are, e.g. on the GPU.
    init = greedy_kmeans_plus_plus(rows, n_clusters, generator)
    kmeans = faiss.Kmeans(
        d,
        n_clusters,
        niter=niter,
        seed=seed,
        gpu=bool(use_gpu),
        verbose=False,
        # Train on every point: no subsampling, and no warning for small clusters.
        max_points_per_centroid=-(-n // n_clusters) + 1,
        min_points_per_centroid=1,
    )
    kmeans.train(x, init_centroids=init.cpu().numpy())
    _, nearest = kmeans.index.search(x, 1)
    assignments = nearest[:, 0].astype(np.int64)
    centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
    if torch.is_tensor(embeddings):
        device = embeddings.device
        return torch.from_numpy(assignments).to(device), torch.from_numpy(centroids).to(device)
    return assignments, centroids


def faiss_kmeans(embeddings, n_clusters: int, **kwargs) -> torch.Tensor:
    """Cluster ids from ``faiss.Kmeans(d, n_clusters, **kwargs)``, as PML's ``FaissKMeans``.

    Trains on a float32 copy of the embeddings, then gives each row its nearest centroid.

    Args:
        embeddings: (n, d) tensor (any device) or numpy array.
        n_clusters: number of clusters, 1 <= n_clusters <= n.
        **kwargs: fields of ``faiss.ClusteringParameters`` (``niter``, ``nredo``, ``seed``,
            ``spherical``, ``max_points_per_centroid``, ...) or ``gpu``.

    Returns:
        int64 (n,) ids, on the input's device (a tensor for numpy input too, as PML).
    """
    faiss = _import_faiss()
    rows = _float32_rows(embeddings, "embeddings")
    check_number("n_clusters", n_clusters, low=1, high=rows.shape[0], integer=True)
    data = np.ascontiguousarray(rows.cpu().numpy())
    kmeans = faiss.Kmeans(data.shape[1], n_clusters, **kwargs)
    kmeans.train(data)
    _, nearest = kmeans.index.search(data, 1)
    return torch.from_numpy(nearest[:, 0].astype(np.int64)).to(rows.device)


class KMeansPlusPlus:
    """``kmeans_func(embeddings, n_clusters) -> ids`` running :func:`cluster`: greedy
    k-means++ seeding and Lloyd iterations on every point (opt-in for ``AccuracyCalculator``;
    its NMI/AMI then differ from PML's default k-means, usually less from run to run).

    Args:
        seed: seed of the k-means++ sampling.
        niter: Lloyd iterations.

    Example:
        >>> import torch
        >>> from metricssl.eval import AccuracyCalculator
        >>> from metricssl.eval.clustering import KMeansPlusPlus
        >>> calc = AccuracyCalculator(include=("NMI",), kmeans_func=KMeansPlusPlus(seed=0))
    """

    def __init__(self, seed: int = 0, niter: int = 20):
        check_number("seed", seed, low=0, high=2**31 - 1, integer=True)
        check_number("niter", niter, low=1, integer=True)
        self.seed, self.niter = seed, niter

    def __call__(self, embeddings, n_clusters: int):
        return cluster(embeddings, n_clusters, seed=self.seed, niter=self.niter)[0]


def _squared_distances(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(n, len(centres)) squared Euclidean distances, |x|^2 + |c|^2 - 2 x.c clamped at 0."""
    c_sq = centres.pow(2).sum(dim=1)
    return torch.addmm(x_sq[:, None] + c_sq[None, :], x, centres.T, alpha=-2).clamp_(min=0)


def greedy_kmeans_plus_plus(
    x: torch.Tensor, n_clusters: int, generator: torch.Generator
) -> torch.Tensor:
    """Initial centroids by greedy k-means++ (Arthur and Vassilvitskii, "k-means++: The
    Advantages of Careful Seeding", SODA 2007; greedy variant as in scikit-learn).

    Each new centroid is the best, by total squared distance to the nearest centroid, of
    2 + ln(k) candidates drawn with probability proportional to that squared distance. The
    greedy choice makes a poor seeding (two centroids in one well-separated cluster) much less
    likely than with plain k-means++ or random points.

    The work stays on ``x``'s device and reads nothing back to the host while it runs (the
    random draws come from ``generator`` on the CPU and are copied over), so on a GPU it does
    not wait for the device once per centroid.

    Args:
        x: (n, d) float32 tensor, on any device.
        n_clusters: k.
        generator: the random source (a CPU generator).

    Returns:
        (k, d) float32 centroids (rows of ``x``), on ``x``'s device.
    """
    n, device = x.shape[0], x.device
    trials = 2 + int(math.log(n_clusters))
    x_sq = x.pow(2).sum(dim=1)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [torch.full((1,), first, device=device)]
    closest = _squared_distances(x, x_sq, x[first : first + 1])[:, 0]
    for _ in range(1, n_clusters):
        weights = closest.to(torch.float64).cumsum(0)
        total = weights[-1]
        unit = torch.rand(trials, generator=generator, dtype=torch.float64).to(device)
        drawn = torch.searchsorted(weights, unit * total, right=True).clamp_(max=n - 1)
        # When every point already coincides with a centroid (total 0), any point will do.
        anywhere = (unit * n).long().clamp_(max=n - 1)
        candidates = torch.where(total > 0, drawn, anywhere)
        candidate_closest = torch.minimum(
            closest[:, None], _squared_distances(x, x_sq, x[candidates])
        )
        best = candidate_closest.to(torch.float64).sum(dim=0).argmin().view(1)
        chosen.append(candidates[best])
        closest = candidate_closest.index_select(1, best)[:, 0].contiguous()
    return x[torch.cat(chosen)].clone()


def _as_1d_codes(labels, name: str) -> np.ndarray:
    t = to_tensor(labels, name)
    if t.ndim == 2:  # multi-dimensional labels: one code per distinct row
        t = torch.unique(t, dim=0, return_inverse=True)[1]
    elif t.ndim != 1:
        raise ValueError(f"{name} must have shape (n,) or (n, label_dims), got {tuple(t.shape)}")
    return t.cpu().numpy()


def clustering_scores(labels, assignments, metrics=CLUSTERING_SCORES) -> dict[str, float]:
    """NMI / AMI / ARI of a clustering against ground-truth labels.

    Args:
        labels: (n,) class labels (or (n, label_dims) multi-dimensional labels).
        assignments: (n,) cluster ids.
        metrics: any of ``"NMI"``, ``"AMI"``, ``"ARI"``.

    Example:
        >>> from metricssl.eval.clustering import clustering_scores
        >>> clustering_scores([0, 0, 1, 1], [1, 1, 0, 0])["NMI"]
        1.0
    """
    if isinstance(metrics, str) or not isinstance(metrics, (tuple, list)):
        raise TypeError(f"metrics must be a tuple or list of names, got {metrics!r}")
    for name in metrics:
        if name not in _SCORE_FUNCTIONS:
            raise ValueError(f"unknown clustering score {name!r}; choose from {CLUSTERING_SCORES}")
    y = _as_1d_codes(np.asarray(labels) if isinstance(labels, list) else labels, "labels")
    a = _as_1d_codes(
        np.asarray(assignments) if isinstance(assignments, list) else assignments, "assignments"
    )
    if len(y) != len(a):
        raise ValueError(f"labels has length {len(y)} but assignments has {len(a)}")
    import sklearn.metrics

    return {name: float(getattr(sklearn.metrics, _SCORE_FUNCTIONS[name])(y, a)) for name in metrics}
