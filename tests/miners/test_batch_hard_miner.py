"""BatchHardMiner: PML's hardest-positive/hardest-negative triplets."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.miners.batch_hard_miner import BatchHardMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    assert_valid_triplets,
    distance_pair,
    embeddings_and_ref,
)
from tests.parity import random_embeddings, random_labels


def pair(distance="lp", collect_stats=False):
    ours_d, pml_d = distance_pair(distance)
    return (
        BatchHardMiner(distance=ours_d, collect_stats=collect_stats),
        pml_miners.BatchHardMiner(distance=pml_d, collect_stats=collect_stats),
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity(n, d, layout, distance, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    ours, theirs = pair(distance)
    out = assert_parity(ours, theirs, x, labels)
    assert_valid_triplets(out, labels)
    out = assert_parity(ours, theirs, x, labels, ref, ref_labels)
    assert_valid_triplets(out, labels, ref_labels)


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_same_as_pml_on_the_same_matrix(distance):
    x, labels, ref, ref_labels = embeddings_and_ref(64, 8, torch.bfloat16, True, "few", seed=3)
    ours = BatchHardMiner(distance=distance_pair(distance)[0])
    theirs = pml_miners.BatchHardMiner(distance=ours.distance)
    assert_parity(ours, theirs, x, labels)
    assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_one_triplet_per_anchor_with_the_extremes():
    x, labels = random_embeddings(30, 8, torch.float64, seed=4), random_labels(30, 3, 4)
    miner = BatchHardMiner()
    a, p, n = miner(x, labels)
    assert torch.equal(a, torch.arange(30))
    mat = miner.distance(x)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    pos = same & ~torch.eye(30, dtype=torch.bool)
    assert torch.equal(mat[a, p], mat.masked_fill(~pos, -1).amax(1))
    assert torch.equal(mat[a, n], mat.masked_fill(same, 9).amin(1))


def test_anchors_without_a_positive_are_dropped():
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    a, _, _ = BatchHardMiner()(random_embeddings(6, 4), labels)
    assert a.tolist() == [0, 1, 3, 4]


def test_stats_and_arguments():
    ours, theirs = pair(collect_stats=True)
    x, labels = random_embeddings(20, 4), random_labels(20, 3)
    assert_parity(ours, theirs, x, labels)
    assert ours.hardest_triplet == pytest.approx(theirs.hardest_triplet)
    with pytest.raises(TypeError):
        BatchHardMiner(pos_strategy="easy")
    with pytest.raises(TypeError, match="distance"):
        BatchHardMiner(distance="lp")
