"""EmbeddingsAlreadyPackagedAsTriplets: PML's triplets, usable by a loss, clear errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricssl.losses.triplet_margin_loss import TripletMarginLoss
from metricssl.miners.embeddings_already_packaged_as_triplets import (
    EmbeddingsAlreadyPackagedAsTriplets,
)
from tests.parity import loss_parity, random_embeddings, random_labels


@pytest.mark.parametrize("n", [3, 6, 30, 99])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_same_triplets_as_pml(n, dtype):
    x, labels = random_embeddings(n, 4, dtype, seed=n), random_labels(n, 3, seed=n)
    ours = EmbeddingsAlreadyPackagedAsTriplets(collect_stats=True)
    theirs = pml_miners.EmbeddingsAlreadyPackagedAsTriplets()
    mined = ours(x, labels)
    expected = theirs(x, labels)
    assert len(mined) == 3
    for a, b in zip(mined, expected):
        assert a.dtype == torch.long and torch.equal(a, b)
    assert ours.num_triplets == n // 3


def test_labels_are_optional_and_unused():
    x = random_embeddings(9, 4, seed=1)
    miner = EmbeddingsAlreadyPackagedAsTriplets()
    a, p, n = miner(x)
    assert a.tolist() == [0, 3, 6] and p.tolist() == [1, 4, 7] and n.tolist() == [2, 5, 8]
    same = miner(x, torch.zeros(9, dtype=torch.long))
    assert all(torch.equal(u, v) for u, v in zip((a, p, n), same))


def test_drives_a_triplet_loss_like_pml():
    x, labels = random_embeddings(12, 8, torch.float64, seed=2), random_labels(12, 4, seed=2)
    mined = EmbeddingsAlreadyPackagedAsTriplets()(x, labels)
    loss_parity(TripletMarginLoss(), pml_losses.TripletMarginLoss(), x, labels, mined)
    # Without labels, the loss uses exactly the packaged triplets.
    loss_parity(TripletMarginLoss(), pml_losses.TripletMarginLoss(), x, None, mined)


@pytest.mark.parametrize("n", [1, 2, 4, 5, 31])
def test_batch_not_a_multiple_of_3(n):
    with pytest.raises(ValueError, match=f"batch size \\({n}\\) must be a multiple of 3"):
        EmbeddingsAlreadyPackagedAsTriplets()(random_embeddings(n, 4), None)


def test_bad_input():
    miner = EmbeddingsAlreadyPackagedAsTriplets()
    x = random_embeddings(6, 4)
    with pytest.raises(ValueError, match="ref_emb"):
        miner(x, None, random_embeddings(6, 4, seed=1))
    with pytest.raises(ValueError, match="embeddings"):
        miner(torch.zeros(6))
    with pytest.raises(ValueError, match="labels"):
        miner(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="distance"):
        EmbeddingsAlreadyPackagedAsTriplets(distance="lp")
    assert miner(x, None, x)[0].tolist() == [0, 3]  # ref_emb that is the batch itself is fine
