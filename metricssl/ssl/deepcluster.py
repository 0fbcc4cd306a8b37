"""DeepCluster (v2): k-means pseudo-labels of the whole training set, re-made every epoch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.recipes import simclr_views
from ..core.validation import check_number
from ..eval.clustering import cluster
from ..models.heads import ProjectionHead
from .datasets import ImageData
from .method import Batch, MethodConfig, SSLMethod, adopt_stored_shapes, param


def deepcluster_views(image_size, *, mean=None, std=None, **options):
    """DeepCluster's recipe: one view per image, SimCLR's augmentations."""
    return simclr_views(image_size, n_views=1, mean=mean, std=std, **options)


def check_num_clusters(num_clusters: int, num_samples: int) -> None:
    """k-means needs at least one image per cluster."""
    check_number("num_clusters", num_clusters, low=2, integer=True)
    if num_clusters > num_samples:
        raise ValueError(
            f"num_clusters={num_clusters} is larger than the training set ({num_samples} images)"
        )


@dataclass(frozen=True)
class DeepClusterConfig(MethodConfig):
    """DeepCluster's hyper-parameters: projection widths, clusters and re-clustering.

    Example:
        >>> from metricssl.ssl.deepcluster import DeepClusterConfig
        >>> DeepClusterConfig().cluster_batch_size
        512
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    num_clusters: int = param(100, low=2, integer=True)
    temperature: float = param(0.1, low=0, low_inclusive=False)
    recluster_every: int = param(1, low=1, integer=True)
    kmeans_iterations: int = param(10, low=1, integer=True)
    cluster_batch_size: int = param(512, low=1, integer=True)


class DeepCluster(SSLMethod):
    """DeepCluster-v2: classify each image into its k-means cluster of the previous pass.

    Caron, Bojanowski, Joulin and Douze, "Deep Clustering for Unsupervised Learning of Visual
    Features", ECCV 2018; the v2 form is from Caron et al., "Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", NeurIPS 2020 (appendix). Before every
    ``recluster_every``-th epoch the whole training split goes through the network, clean and
    in eval mode, to unit vectors ``z = normalize(projection(backbone(x)))``; FAISS k-means
    (:func:`metricssl.eval.clustering.cluster`, k-means++ seeding, seeded per epoch) splits
    them into ``num_clusters`` clusters. The cluster of each image is its pseudo-label and the
    normalised centroids are the classifier, replaced at each clustering (v2's fix for
    DeepCluster's re-initialised head, whose old optimizer state did not match the new
    clusters). The loss is the cross-entropy of ``z . centroids / T`` against the
    pseudo-labels of an augmented view.

    Pseudo-labels and centroids are buffers (checkpointed); the clustering is a deterministic
    function of the weights and the epoch, so a resumed run re-clusters exactly as an
    uninterrupted one. The Trainer supplies ``num_samples``, the images' positions
    (``Batch.indices``) and the training split (``on_epoch_start``).

    Args:
        backbone: images -> features.
        projection_head: features -> ``z`` (normalised here).
        num_samples: images in the training split.
        num_clusters: k of k-means (2 <= k <= num_samples).
        temperature: ``T`` of the softmax over centroids.
        recluster_every: epochs between clusterings (1: every epoch, as in the paper).
        kmeans_iterations: Lloyd iterations per clustering.
        cluster_batch_size: images per forward pass of the clustering pass.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.datasets import ImageData
        >>> from metricssl.ssl.deepcluster import DeepCluster
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = DeepCluster(backbone, nn.Linear(32, 16), num_samples=40, num_clusters=4)
        >>> images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
        >>> method.on_epoch_start(0, ImageData(images, None))
        >>> out = method.training_step(Batch([images[:8].float() / 255], indices=torch.arange(8)))
        >>> out["loss"].backward()
    """

    name = "deepcluster"
    num_views = 1

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        num_samples: int,
        num_clusters: int = DeepClusterConfig.num_clusters,
        temperature: float = DeepClusterConfig.temperature,
        recluster_every: int = DeepClusterConfig.recluster_every,
        kmeans_iterations: int = DeepClusterConfig.kmeans_iterations,
        cluster_batch_size: int = DeepClusterConfig.cluster_batch_size,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_number("num_samples", num_samples, low=2, integer=True)
        check_num_clusters(num_clusters, num_samples)
        DeepClusterConfig.check(
            temperature=temperature,
            recluster_every=recluster_every,
            kmeans_iterations=kmeans_iterations,
            cluster_batch_size=cluster_batch_size,
        )
        self.projection_head = projection_head
        self.num_samples = int(num_samples)
        self.num_clusters = int(num_clusters)
        self.temperature = float(temperature)
        self.recluster_every = int(recluster_every)
        self.kmeans_iterations = int(kmeans_iterations)
        self.cluster_batch_size = int(cluster_batch_size)
        self.register_buffer("pseudo_labels", torch.full((self.num_samples,), -1))
        self.register_buffer("centroids", torch.zeros(0))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection_head(self.backbone(x)).float(), dim=1)

    def on_epoch_start(self, epoch: int, data: ImageData) -> None:
        if len(data) != self.num_samples:
            raise ValueError(
                f"the training split has {len(data)} images, this DeepCluster was built for "
                f"num_samples={self.num_samples}"
            )
        if epoch % self.recluster_every == 0 or self.centroids.ndim != 2:
            self.recluster(data, seed=epoch)

    @torch.no_grad()
    def recluster(self, data: ImageData, seed: int = 0) -> None:
        """Embed every image of ``data`` (clean, eval mode) and k-means them."""
        device = self.pseudo_labels.device
        was_training = self.training
        self.eval()
        try:
            z = torch.cat(
                [
                    self._project(self.clean_images(images.to(device)))
                    for images, _ in data.batches(torch.arange(len(data)), self.cluster_batch_size)
                ]
            )
        finally:
            self.train(was_training)
        assignments, centroids = cluster(
            z, self.num_clusters, seed=seed, niter=self.kmeans_iterations
        )
        self.pseudo_labels.copy_(assignments)
        self.centroids = F.normalize(centroids.to(device), dim=1)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        if batch.indices is None:
            raise ValueError("DeepCluster needs each image's position in the training set")
        if self.centroids.ndim != 2:
            raise RuntimeError("DeepCluster has not clustered yet: call on_epoch_start first")
        z = self._project(batch.views[0])
        with torch.autocast(device_type=z.device.type, enabled=False):
            logits = z @ self.centroids.t() / self.temperature
            loss = F.cross_entropy(logits, self.pseudo_labels[batch.indices])
        return {"loss": loss}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        adopt_stored_shapes(self, state_dict, prefix, ["centroids"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def deepcluster_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """DeepCluster-v2's projection MLP (``proj_hidden_dim`` -> ``proj_output_dim``)."""
    return {
        "projection_head": ProjectionHead(
            feature_dim, int(hparams["proj_hidden_dim"]), int(hparams["proj_output_dim"])
        )
    }
