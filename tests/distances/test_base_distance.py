"""BaseDistance's hooks as PML defines them: a subclass's check_shapes and compute_mat are
respected everywhere (the distance itself, BatchedDistance, losses, miners), and a matrix of
the wrong shape is refused as PML refuses it."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl import losses, miners
from metricssl.distances import BaseDistance, BatchedDistance, LpDistance


class MeanOverViews(LpDistance):
    """Embeddings of shape (batch, views, dim): the distance between the views' means."""

    def check_shapes(self, query_emb, ref_emb):
        if query_emb.ndim != 3 or (ref_emb is not None and ref_emb.ndim != 3):
            raise ValueError("expected (batch, views, dim) embeddings")

    def maybe_normalize(self, embeddings, dim=2, **kwargs):
        return super().maybe_normalize(embeddings, dim=dim, **kwargs)

    def compute_mat(self, query_emb, ref_emb):
        return super().compute_mat(query_emb.mean(1), ref_emb.mean(1))

    def pairwise_distance(self, query_emb, ref_emb):
        return super().pairwise_distance(query_emb.mean(1), ref_emb.mean(1))


def views(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, generator=g), torch.arange(n) % 3


def test_3d_subclass_is_used_by_the_distance_and_batched_distance():
    x, _ = views()
    d = MeanOverViews()
    expected = torch.cdist(*(torch.nn.functional.normalize(x, dim=2).mean(1),) * 2)
    torch.testing.assert_close(d(x), expected)
    assert d(x, x[:5]).shape == (12, 5)
    blocks = []
    BatchedDistance(d, lambda mat, s, e: blocks.append(mat), batch_size=5)(x)
    torch.testing.assert_close(torch.cat(blocks), expected)
    with pytest.raises(ValueError, match="views"):
        d(torch.randn(4, 8))  # the subclass's own check, not a 2-D one


@pytest.mark.parametrize(
    "make",
    [
        lambda d: losses.TripletMarginLoss(distance=d),
        lambda d: losses.ContrastiveLoss(distance=d),
        lambda d: losses.MultiSimilarityLoss(distance=d),
    ],
)
def test_3d_subclass_works_in_losses(make):
    x, labels = views()
    x.requires_grad_(True)
    loss = make(MeanOverViews())(x, labels)
    loss.backward()
    assert torch.isfinite(loss) and x.grad.shape == x.shape
    with pytest.raises(ValueError):  # the default distance still wants 2-D embeddings
        make(LpDistance())(x, labels)


@pytest.mark.parametrize("miner", [miners.TripletMarginMiner, miners.BatchHardMiner])
def test_3d_subclass_works_in_miners(miner):
    x, labels = views()
    tuples = miner(distance=MeanOverViews())(x, labels)
    assert all(len(t) == len(tuples[0]) for t in tuples)


def test_squared_lp_subclass_keeps_its_own_compute_mat():
    # LpDistance(power=2) has a fused path; a subclass's compute_mat must still be the one used.
    class Halved(LpDistance):
        def compute_mat(self, query_emb, ref_emb):
            return super().compute_mat(query_emb, ref_emb) / 2

    class PMLHalved(pml_distances.LpDistance):
        def compute_mat(self, query_emb, ref_emb):
            return super().compute_mat(query_emb, ref_emb) / 2

    x, _ = views()
    x = x[:, 0]
    torch.testing.assert_close(Halved(power=2)(x), PMLHalved(power=2)(x))
    torch.testing.assert_close(Halved(power=2)(x), LpDistance(power=2)(x) / 4)


def test_compute_mat_of_the_wrong_shape_raises_what_pml_raises():
    class Wrong(BaseDistance):
        def compute_mat(self, query_emb, ref_emb):
            return torch.zeros(len(query_emb), len(ref_emb) + 1)

    class PMLWrong(pml_distances.BaseDistance):
        compute_mat = Wrong.compute_mat

    x = torch.randn(4, 3)
    with pytest.raises(AssertionError):
        PMLWrong()(x)
    with pytest.raises(AssertionError, match="compute_mat returned shape"):
        Wrong()(x)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        Wrong()(x)


@pytest.mark.parametrize("name", ["LpDistance", "SNRDistance"])
def test_distances_take_is_inverted_as_pml_does(name):
    from metricssl import distances

    ours, theirs = getattr(distances, name), getattr(pml_distances, name)
    assert ours(is_inverted=False).is_inverted is theirs(is_inverted=False).is_inverted is False
    with pytest.raises(AssertionError):
        theirs(is_inverted=True)
    with pytest.raises(AssertionError, match="is_inverted must be False"):
        ours(is_inverted=True)
