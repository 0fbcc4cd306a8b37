"""DeepCluster: the pseudo-labels recover a planted clustering; re-clustering, resume, errors."""

import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score
from torch import nn

from metricssl.ssl.datasets import ImageData
from metricssl.ssl.deepcluster import DeepCluster, check_num_clusters
from metricssl.ssl.method import Batch


def planted(n_per=30, k=4, seed=0):
    """Images near one of k random prototypes, shuffled; the planted cluster of each."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randint(0, 256, (k, 1, 8, 8), generator=g).float()
    labels = torch.arange(k).repeat_interleave(n_per)
    labels = labels[torch.randperm(len(labels), generator=g)]
    noise = torch.randn(len(labels), 1, 8, 8, generator=g) * 8
    images = (prototypes[labels] + noise).clamp(0, 255).to(torch.uint8)
    return images, labels


def make(num_samples=120, **kwargs):
    torch.manual_seed(0)
    # An identity projection of the flattened pixels: k-means sees the planted structure.
    return DeepCluster(nn.Flatten(), nn.Identity(), num_samples, **kwargs)


def test_pseudo_labels_recover_a_planted_clustering():
    images, labels = planted()
    method = make(num_clusters=4)
    method.on_epoch_start(0, ImageData(images, None))
    # Cluster ids are arbitrary: NMI is invariant to their permutation.
    assert normalized_mutual_info_score(labels, method.pseudo_labels) == pytest.approx(1.0)
    assert method.centroids.shape == (4, 64)
    assert torch.allclose(method.centroids.norm(dim=1), torch.ones(4))


def test_reclusters_every_n_epochs_and_trains():
    images, _ = planted()
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    torch.manual_seed(0)
    method = DeepCluster(backbone, nn.Linear(16, 8), 120, num_clusters=4, recluster_every=2)
    data = ImageData(images, None)
    method.on_epoch_start(0, data)
    first = method.pseudo_labels.clone()
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = method.training_step(Batch([images[:32].float() / 255], indices=torch.arange(32)))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0]
    method.on_epoch_start(1, data)  # not a clustering epoch
    assert torch.equal(method.pseudo_labels, first)
    centroids = method.centroids.clone()
    method.on_epoch_start(2, data)
    assert not torch.equal(method.centroids, centroids)


def test_state_dict_round_trip_restores_the_clustering():
    images, _ = planted()
    a = make(num_clusters=4)
    a.on_epoch_start(0, ImageData(images, None))
    b = make(num_clusters=4)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.pseudo_labels, b.pseudo_labels)
    assert torch.equal(a.centroids, b.centroids)


def test_errors():
    with pytest.raises(ValueError, match="larger than the training set"):
        make(num_samples=10, num_clusters=11)
    with pytest.raises(ValueError, match="num_clusters"):
        check_num_clusters(1, 10)
    with pytest.raises(ValueError, match="temperature"):
        make(temperature=0)
    with pytest.raises(ValueError, match="recluster_every"):
        make(recluster_every=0)
    method = make(num_clusters=4)
    batch = Batch([torch.rand(8, 1, 8, 8)], indices=torch.arange(8))
    with pytest.raises(RuntimeError, match="not clustered yet"):
        method.training_step(batch)
    with pytest.raises(ValueError, match="num_samples=120"):
        method.on_epoch_start(0, ImageData(planted(n_per=10)[0], None))
    with pytest.raises(ValueError, match="position"):
        method.training_step(Batch([torch.rand(8, 1, 8, 8)]))
