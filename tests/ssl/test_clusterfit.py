"""ClusterFit: k-means pseudo-labels recover a planted clustering and train a classifier."""

import pytest
import torch
from torch import nn

from metricssl.eval.clustering import clustering_scores
from metricssl.ssl.clusterfit import clusterfit_labels
from metricssl.ssl.registry import build_method
from metricssl.ssl.trainer import Trainer


def planted_images(per_group=20, groups=4, seed=0):
    # Group k lights up its own quadrant: the groups point in different directions.
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 30, (per_group * groups, 1, 8, 8), dtype=torch.uint8, generator=g)
    for k in range(groups):
        rows, cols = divmod(k, 2)
        block = images[k * per_group : (k + 1) * per_group, :, 4 * rows : 4 * rows + 4]
        block[..., 4 * cols : 4 * cols + 4] += 200
    return images, torch.arange(groups).repeat_interleave(per_group)


def pixel_method():
    return build_method("simclr", (1, 8, 8), backbone=nn.Flatten(), mean=[0.5], std=[0.3])


def test_pseudo_labels_recover_a_planted_clustering():
    images, planted = planted_images()
    labels = clusterfit_labels(pixel_method(), images, num_clusters=4)
    assert labels.dtype == torch.int64 and labels.shape == (80,)
    # A clustering up to a renaming of the clusters.
    assert clustering_scores(planted, labels, ("NMI",))["NMI"] == pytest.approx(1.0)


def test_the_same_seed_gives_the_same_labels():
    images, _ = planted_images(seed=3)
    a = clusterfit_labels(pixel_method(), images, num_clusters=6, seed=1)
    b = clusterfit_labels(pixel_method(), images, num_clusters=6, seed=1)
    assert torch.equal(a, b)


def test_fine_tuning_on_the_clusters_with_the_supervised_trainer(tmp_path):
    images, _ = planted_images()
    pretrained = build_method(
        "simclr", (1, 8, 8), backbone_kwargs={"embedding_dim": 16, "width": 4}
    )
    labels = clusterfit_labels(pretrained, images, num_clusters=4)
    trainer = Trainer(
        method="supervised",
        dataset=(images, labels),
        backbone=pretrained.backbone,
        loss="NormalizedSoftmaxLoss",
        miner=None,
        hparams={"samples_per_class": 4},
        epochs=2,
        batch_size=16,
        out=tmp_path,
        progress=False,
        knn_k=5,
    )
    metrics = trainer.fit()
    assert trainer.method.backbone is pretrained.backbone
    assert torch.isfinite(torch.tensor(metrics["loss"]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_clusters": 81}, "num_clusters=81 is larger than the training set"),
        ({"num_clusters": 1}, "num_clusters"),
        ({"num_clusters": 4, "niter": 0}, "niter"),
        ({"num_clusters": 4, "normalize": "yes"}, "normalize"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    images, _ = planted_images()
    with pytest.raises((ValueError, TypeError), match=message):
        clusterfit_labels(pixel_method(), images, **kwargs)
