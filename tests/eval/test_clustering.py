"""k-means clustering (FAISS, greedy k-means++ seeding) and NMI / AMI / ARI."""

import numpy as np
import pytest
import torch

from metricssl.eval.clustering import cluster, clustering_scores, greedy_kmeans_plus_plus
from tests.host_reads import count_host_reads


def blobs(n_per, centres, seed):
    g = torch.Generator().manual_seed(seed)
    c = 10 * torch.randn(centres, 16, generator=g)
    y = torch.arange(centres).repeat_interleave(n_per)
    return c[y] + torch.randn(len(y), 16, generator=g), y


@pytest.mark.parametrize("seed", range(4))
def test_recovers_planted_clusters(seed):
    x, y = blobs(60, 8, seed)
    assignments, centroids = cluster(x, 8, seed=seed)
    assert assignments.shape == (480,) and centroids.shape == (8, 16)
    assert clustering_scores(y, assignments) == pytest.approx({"NMI": 1, "AMI": 1, "ARI": 1})


def test_numpy_in_numpy_out_and_reproducible():
    x, _ = blobs(30, 3, 0)
    a1, c1 = cluster(x.numpy(), 3)
    a2, c2 = cluster(x.numpy(), 3)
    assert isinstance(a1, np.ndarray) and a1.dtype == np.int64
    assert np.array_equal(a1, a2) and np.array_equal(c1, c2)


def test_as_many_clusters_as_points_and_identical_points():
    x = torch.randn(5, 3)
    assignments, _ = cluster(x, 5)
    assert sorted(assignments.tolist()) == [0, 1, 2, 3, 4]
    assignments, _ = cluster(torch.ones(10, 3), 2)  # degenerate: still runs
    assert assignments.shape == (10,)


def test_scores():
    assert clustering_scores([0, 0, 1, 1], [1, 1, 0, 0]) == {"NMI": 1.0, "AMI": 1.0, "ARI": 1.0}
    assert clustering_scores([0, 0, 1, 1], [0, 1, 0, 1], metrics=("ARI",))["ARI"] < 0
    two_d = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]])
    assert clustering_scores(two_d, torch.tensor([5, 5, 3, 3]))["NMI"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: cluster(torch.randn(5, 2), 6), ValueError, "n_clusters"),
        (lambda: cluster(torch.randn(5, 2), 0), ValueError, "n_clusters"),
        (lambda: cluster(torch.randn(5, 2), 2, niter=0), ValueError, "niter"),
        (lambda: cluster(torch.randn(5), 2), ValueError, "2D"),
        (lambda: cluster(torch.full((4, 2), float("nan")), 2), ValueError, "NaN"),
        (lambda: cluster(torch.randn(4, 2), 2, seed=-1), ValueError, "seed"),
        (lambda: clustering_scores([0, 1], [0]), ValueError, "length"),
        (lambda: clustering_scores([0, 1], [0, 1], metrics=("FMI",)), ValueError, "FMI"),
        (lambda: clustering_scores([0, 1], [0, 1], metrics="NMI"), TypeError, "metrics"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_seeding_reads_nothing_back_while_it_runs(monkeypatch):
    # On a GPU each read would wait for the device, once per centroid.
    x, _ = blobs(40, 8, seed=3)
    with count_host_reads(monkeypatch) as counts:
        centres = greedy_kmeans_plus_plus(x, 8, torch.Generator().manual_seed(0))
    assert sum(counts.values()) <= 1, counts  # the first draw, from the CPU generator
    # One centre per planted cluster: every cluster holds exactly one chosen row.
    nearest_blob = torch.cdist(centres, x).argmin(dim=1) // 40
    assert sorted(nearest_blob.tolist()) == list(range(8))


def test_seeding_of_identical_points_picks_rows():
    x = torch.ones(5, 3)
    centres = greedy_kmeans_plus_plus(x, 3, torch.Generator().manual_seed(1))
    assert torch.equal(centres, torch.ones(3, 3))
