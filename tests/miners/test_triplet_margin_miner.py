"""TripletMarginMiner: the same triplets as PML's, block by block; errors and edge cases."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.core import chunking
from metricssl.miners.triplet_margin_miner import TripletMarginMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    assert_valid_triplets,
    distance_pair,
    embeddings_and_ref,
)
from tests.parity import random_embeddings, random_labels

TYPES = ["all", "hard", "semihard", "easy"]


def pair(type_of_triplets="all", margin=0.2, distance="lp", collect_stats=False):
    ours_d, pml_d = distance_pair(distance)
    args = dict(margin=margin, type_of_triplets=type_of_triplets, collect_stats=collect_stats)
    return TripletMarginMiner(distance=ours_d, **args), pml_miners.TripletMarginMiner(
        distance=pml_d, **args
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_parity_float64(n, d, layout, distance):
    x, labels, _, _ = embeddings_and_ref(n, d, torch.float64, False, layout, seed=n + d)
    for t in TYPES:
        ours, theirs = pair(t, distance=distance)
        out = assert_parity(ours, theirs, x, labels)
        assert_valid_triplets(out, labels)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("margin", [-0.1, 0.0, 0.5])
def test_parity_float32_ref_emb_and_margins(layout, distance, margin):
    x, labels, ref, ref_labels = embeddings_and_ref(40, 8, torch.float32, True, layout, seed=2)
    for t in TYPES:
        ours, theirs = pair(t, margin=margin, distance=distance)
        assert_parity(ours, theirs, x, labels)
        out = assert_parity(ours, theirs, x, labels, ref, ref_labels)
        assert_valid_triplets(out, labels, ref_labels)


def test_query_passed_again_as_reference():
    # PML drops the diagonal only when ref_labels *is* labels; a copy keeps it.
    x, labels = random_embeddings(20, 4, seed=3), random_labels(20, 3, 3)
    for t in TYPES:
        ours, theirs = pair(t)
        assert_parity(ours, theirs, x, labels, x, labels)
        out = assert_parity(ours, theirs, x, labels, x.clone(), labels.clone())
        assert (out[0] == out[1]).any() or t in ("hard", "semihard")


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_matches_pml_on_the_same_distance_matrix(distance):
    # PML's LpDistance has no bf16 cdist on CPU, and bf16 distances tie a lot: run PML's
    # algorithm on our distance object, so both decide from the very same bf16 matrix.
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, "few", seed=4)
    for t in TYPES:
        ours = TripletMarginMiner(type_of_triplets=t, distance=distance_pair(distance)[0])
        theirs = pml_miners.TripletMarginMiner(type_of_triplets=t, distance=ours.distance)
        out = assert_parity(ours, theirs, x, labels)
        assert_valid_triplets(out, labels)
        assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_types_partition_all_triplets():
    x, labels = random_embeddings(30, 4, torch.float64, seed=5), random_labels(30, 4, 5)
    found = {t: TripletMarginMiner(type_of_triplets=t)(x, labels) for t in TYPES}
    as_set = {t: set(map(tuple, torch.stack(v, 1).tolist())) for t, v in found.items()}
    assert as_set["hard"] | as_set["semihard"] == as_set["all"]
    assert not as_set["hard"] & as_set["semihard"]
    assert not as_set["all"] & as_set["easy"]
    total = sum(len(v) for k, v in as_set.items() if k in ("all", "easy"))
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    n_pos, n_neg = same.sum(1) - 1, (~same).sum(1)
    assert total == int((n_pos * n_neg).sum())


@pytest.mark.parametrize("budget", [1, 4096, 100_000])
def test_small_memory_budget_walks_blocks(budget, monkeypatch):
    monkeypatch.setattr(chunking, "_MEMORY_BUDGET_BYTES", budget)
    x, labels = random_embeddings(50, 8, seed=6), random_labels(50, 5, 6)
    for t in TYPES:
        ours, theirs = pair(t)
        assert_parity(ours, theirs, x, labels)


def test_stats_match_pml():
    x, labels = random_embeddings(40, 8, seed=7), random_labels(40, 4, 7)
    for distance in ["lp", "cosine"]:
        ours, theirs = pair("semihard", distance=distance, collect_stats=True)
        assert_parity(ours, theirs, x, labels)
        for name in ["avg_triplet_margin", "pos_pair_dist", "neg_pair_dist"]:
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=1e-5, abs=1e-6)


def test_no_triplets_gives_empty_int64_and_nan_stats():
    ours, theirs = pair(collect_stats=True)
    x = random_embeddings(6, 4)
    for labels in [torch.zeros(6, dtype=torch.long), torch.arange(6)]:
        out = assert_parity(ours, theirs, x, labels)
        assert all(t.dtype == torch.long and t.numel() == 0 for t in out)
        assert ours.num_triplets == 0
    assert ours.avg_triplet_margin != ours.avg_triplet_margin  # NaN, as PML's mean of nothing


def test_no_grad_and_device():
    x = random_embeddings(12, 4, requires_grad=True)
    out = TripletMarginMiner()(x, random_labels(12, 3))
    assert not any(t.requires_grad for t in out)
    assert all(t.device == x.device for t in out)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(type_of_triplets="medium"), ValueError, "type_of_triplets"),
        (dict(type_of_triplets=None), ValueError, "type_of_triplets"),
        (dict(margin="0.2"), TypeError, "margin"),
        (dict(margin=float("nan")), ValueError, "margin"),
        (dict(distance="cosine"), TypeError, "distance"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        TripletMarginMiner(**kwargs)


def test_bad_inputs():
    miner, x = TripletMarginMiner(), random_embeddings(6, 4)
    with pytest.raises(ValueError, match="needs labels"):
        miner(x, None)
    with pytest.raises(ValueError, match="ref_labels is required"):
        miner(x, torch.arange(6), random_embeddings(4, 4))
    with pytest.raises(ValueError, match="labels has length 5"):
        miner(x, torch.arange(5))
