"""BatchedDistance: blocks of query rows handed to a callback."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl.distances.batched_distance import BatchedDistance
from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from tests.parity import random_embeddings


def _collect(batched_cls, distance, batch_size, query, ref=None):
    calls = []
    bd = batched_cls(distance, lambda mat, s, e: calls.append((mat, s, e)), batch_size)
    bd(query, ref)
    return calls


@pytest.mark.parametrize("batch_size", [1, 3, 5, 32])
@pytest.mark.parametrize("with_ref", [False, True])
def test_blocks_reassemble_the_full_matrix_like_pml(batch_size, with_ref):
    x = random_embeddings(10, 4, torch.float64, seed=1)
    y = random_embeddings(6, 4, torch.float64, seed=2) if with_ref else None
    ours = _collect(BatchedDistance, LpDistance(), batch_size, x, y)
    theirs = _collect(pml_distances.BatchedDistance, pml_distances.LpDistance(), batch_size, x, y)
    assert [s for _, s, _ in ours] == [s for _, s, _ in theirs]
    for (m1, s, e), (m2, _, _) in zip(ours, theirs):
        assert e == min(s + batch_size, 10)
        torch.testing.assert_close(m1, m2)
    full = torch.cat([m for m, _, _ in ours])
    torch.testing.assert_close(full, LpDistance()(x, y))


def test_attributes_forward_to_the_distance():
    bd = BatchedDistance(CosineSimilarity(), lambda *a: None)
    assert bd.is_inverted and bd.normalize_embeddings
    assert bd.batch_size == 32
    torch.testing.assert_close(bd.margin(torch.tensor(1.0), torch.tensor(3.0)), torch.tensor(2.0))


def test_errors():
    with pytest.raises(TypeError, match="distance"):
        BatchedDistance(torch.nn.Identity(), lambda *a: None)
    with pytest.raises(TypeError, match="iter_fn"):
        BatchedDistance(LpDistance(), iter_fn=3)
    with pytest.raises(ValueError, match="batch_size"):
        BatchedDistance(LpDistance(), lambda *a: None, batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        BatchedDistance(LpDistance(), lambda *a: None, batch_size=2.5)
    with pytest.raises(ValueError, match="iter_fn"):
        BatchedDistance(LpDistance())(torch.randn(3, 2))
