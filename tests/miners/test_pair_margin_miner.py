"""PairMarginMiner: PML's pairs and statistics; the shared multiset comparison itself."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.miners.pair_margin_miner import PairMarginMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    distance_pair,
    embeddings_and_ref,
    same_tuples,
)
from tests.parity import random_embeddings, random_labels

MARGINS = {"lp": [(0.2, 0.8), (1.0, 1.4)], "cosine": [(0.8, 0.2), (0.1, -0.3)]}


def pair(pos_margin, neg_margin, distance="lp", collect_stats=False, ours_distance=None):
    ours_d, pml_d = distance_pair(distance)
    args = dict(pos_margin=pos_margin, neg_margin=neg_margin, collect_stats=collect_stats)
    return (
        PairMarginMiner(distance=ours_distance or ours_d, **args),
        pml_miners.PairMarginMiner(distance=ours_distance or pml_d, **args),
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity(n, d, layout, distance, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    for margins in MARGINS[distance]:
        ours, theirs = pair(*margins, distance)
        assert_parity(ours, theirs, x, labels)
        assert_parity(ours, theirs, x, labels, ref, ref_labels)


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_same_as_pml_on_the_same_matrix(distance):
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, "few", seed=3)
    ours, theirs = pair(*MARGINS[distance][0], distance, ours_distance=distance_pair(distance)[0])
    assert_parity(ours, theirs, x, labels)
    assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_pairs_violate_the_margins():
    x, labels = random_embeddings(30, 4, torch.float64, seed=4), random_labels(30, 3, 4)
    miner = PairMarginMiner(pos_margin=0.5, neg_margin=1.0)
    a1, p, a2, n = miner(x, labels)
    mat = miner.distance(x)
    assert (mat[a1, p] > 0.5).all() and (mat[a2, n] < 1.0).all()
    assert (labels[a1] == labels[p]).all() and (a1 != p).all()
    assert (labels[a2] != labels[n]).all()


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_stats(distance):
    x, labels = random_embeddings(20, 4, seed=5), random_labels(20, 3, 5)
    ours, theirs = pair(*MARGINS[distance][0], distance, collect_stats=True)
    assert_parity(ours, theirs, x, labels)
    assert ours.pos_pair_dist == pytest.approx(theirs.pos_pair_dist)
    assert ours.neg_pair_dist == pytest.approx(theirs.neg_pair_dist)
    assert_parity(ours, theirs, x, torch.zeros(20, dtype=torch.long))
    assert ours.neg_pair_dist == theirs.neg_pair_dist == 0


def test_comparison_helper_catches_differences():
    t = torch.tensor
    same_tuples((t([0, 1]), t([1, 0]), t([2]), t([3])), (t([1, 0]), t([0, 1]), t([2]), t([3])))
    with pytest.raises(AssertionError):
        same_tuples((t([0]), t([1]), t([2]), t([3])), (t([0]), t([1]), t([2]), t([2])))
    with pytest.raises(AssertionError):
        same_tuples((t([0, 0]), t([1, 1]), t([2, 2])), (t([0, 0]), t([1, 2]), t([2, 1])))
    big = torch.arange(3000)
    with pytest.raises(AssertionError):
        same_tuples((big, big, big), (big, big, big.flip(0)))


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(pos_margin="a"), TypeError, "pos_margin"),
        (dict(neg_margin=float("nan")), ValueError, "neg_margin"),
        (dict(distance=object()), TypeError, "distance"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        PairMarginMiner(**kwargs)


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        PairMarginMiner()(random_embeddings(4, 3), None)
