"""ClusterFit's first step: k-means pseudo-labels from a pretrained encoder's features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.validation import check_bool, check_number
from ..eval.clustering import cluster
from .deepcluster import check_num_clusters
from .embed import embed_dataset
from .method import SSLMethod


def clusterfit_labels(
    method: SSLMethod,
    images,
    num_clusters: int,
    seed: int = 0,
    niter: int = 20,
    normalize: bool = True,
    batch_size: int = 512,
    progress: bool = False,
) -> torch.Tensor:
    """Pseudo-labels of ``images``: the k-means clusters of ``method``'s features.

    Yan, Misra, Gupta, Ghadiyaram and Mahajan, "ClusterFit: Improving Generalization of
    Visual Representations", CVPR 2020: cluster the features of a pretrained encoder, then
    train a network to classify the clusters; the second network generalises better than the
    first. Step 2 is the supervised Trainer on ``(images, labels)``::

        Trainer(method="supervised", dataset=(images, labels), backbone=method.backbone,
                loss="NormalizedSoftmaxLoss", miner=None)

    (``backbone=method.backbone`` fine-tunes the pretrained encoder; a backbone name trains a
    fresh one, as in the paper.) DeepCluster (:class:`~metricssl.ssl.deepcluster.DeepCluster`)
    is the iterated form: it re-clusters its own features every epoch.

    Args:
        method: the pretrained :class:`SSLMethod` (e.g. from
            :func:`~metricssl.ssl.checkpoint.load_checkpoint`); its clean features are used.
        images: uint8 (N, C, H, W) tensor or array, or :class:`~metricssl.ssl.datasets.ImageData`.
        num_clusters: k (2 <= k <= N; the paper uses more clusters than classes).
        seed: seed of the k-means++ seeding.
        niter: Lloyd iterations.
        normalize: L2-normalise the features first (cosine k-means, as for the kNN score).
        batch_size: images per forward pass.
        progress: show a progress bar while embedding.

    Returns:
        int64 (N,) cluster index of each image, on the CPU.

    Example:
        >>> from metricssl.data.digits import load_digits
        >>> from metricssl.ssl.registry import build_method
        >>> from metricssl.ssl.clusterfit import clusterfit_labels
        >>> images, _ = load_digits("train")
        >>> method = build_method("simclr", images.shape[1:])
        >>> labels = clusterfit_labels(method, images, num_clusters=20)
        >>> labels.shape, int(labels.max()) < 20
        (torch.Size([1438]), True)
    """
    check_number("niter", niter, low=1, integer=True)
    check_bool("normalize", normalize)
    features = embed_dataset(method, images, batch_size=batch_size, progress=progress)
    check_num_clusters(num_clusters, len(features))
    if normalize:
        features = F.normalize(features, dim=1)
    assignments, _ = cluster(features, int(num_clusters), seed=seed, niter=niter)
    return assignments.cpu()
