"""AngularMiner: the same triplets as PML's, through the fast and the exact path."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.core import chunking
from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.miners import angular_miner
from metricssl.miners.angular_miner import AngularMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    assert_valid_triplets,
    embeddings_and_ref,
    same_tuples,
)
from tests.parity import random_embeddings, random_labels


def pair(angle=20, collect_stats=False):
    return (
        AngularMiner(angle=angle, collect_stats=collect_stats),
        pml_miners.AngularMiner(angle=angle, collect_stats=collect_stats),
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity(n, d, layout, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    ours, theirs = pair()
    out = assert_parity(ours, theirs, x, labels)
    assert_valid_triplets(out, labels)
    if n <= 33:  # PML's reference run holds every triplet's embeddings
        out = assert_parity(ours, theirs, x, labels, ref, ref_labels)
        assert_valid_triplets(out, labels, ref_labels)


@pytest.mark.parametrize("angle", [0, 5, 35, 60, 89])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_angles(angle, dtype):
    x, labels = random_embeddings(40, 8, dtype, seed=2), random_labels(40, 4, 2)
    assert_parity(*pair(angle), x, labels)


@pytest.mark.parametrize("factor", [0.0, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_only_and_exact_only_paths(factor, dtype, monkeypatch):
    # factor 0 trusts the expanded formula everywhere; a huge factor sends every triplet
    # through PML's exact formula. Both must give PML's set on these inputs.
    monkeypatch.setattr(angular_miner, "AMBIGUITY_FACTOR", factor)
    x, labels, ref, ref_labels = embeddings_and_ref(30, 16, dtype, True, "few", seed=3)
    ours, theirs = pair()
    assert_parity(ours, theirs, x, labels)
    assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_triplets_on_the_threshold_are_decided_exactly():
    # Many triplets exactly at 45 degrees (|a - p| = 2 |n - c|) and a negative at the center.
    x = torch.tensor(
        [[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -1.0], [1.0, 0.0], [0.0, 2.0], [2.0, 2.0]]
    )
    labels = torch.tensor([0, 0, 1, 2, 3, 0, 0])
    for angle in [44.9, 45, 45.1, 89.9]:
        assert_parity(*pair(angle), x, labels)


def test_bfloat16_is_pml_on_the_float32_values():
    x, labels, ref, ref_labels = embeddings_and_ref(33, 16, torch.bfloat16, True, "few", seed=4)
    ours, theirs = AngularMiner(), pml_miners.AngularMiner()
    same_tuples(ours(x, labels), theirs(x.float(), labels))
    out = ours(x, labels, ref, ref_labels)
    same_tuples(out, theirs(x.float(), labels, ref.float(), ref_labels))
    assert_valid_triplets(out, labels, ref_labels)


@pytest.mark.parametrize("budget", [1, 20_000])
def test_small_memory_budget_walks_blocks(budget, monkeypatch):
    monkeypatch.setattr(chunking, "_MEMORY_BUDGET_BYTES", budget)
    x, labels = random_embeddings(40, 8, seed=5), random_labels(40, 4, 5)
    assert_parity(*pair(), x, labels)


def test_stats_match_pml():
    ours, theirs = pair(collect_stats=True)
    x, labels = random_embeddings(40, 8, torch.float64, seed=6), random_labels(40, 4, 6)
    assert_parity(ours, theirs, x, labels)
    for name in [
        "average_angle",
        "average_angle_above_threshold",
        "average_angle_below_threshold",
        "min_angle",
        "max_angle",
        "std_of_angle",
    ]:
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name), rel=1e-6), name
    assert ours.angle == theirs.angle


def test_no_triplets():
    ours, theirs = pair(collect_stats=True)
    for labels in [torch.zeros(6, dtype=torch.long), torch.arange(6)]:
        out = assert_parity(ours, theirs, random_embeddings(6, 4), labels)
        assert all(t.numel() == 0 and t.dtype == torch.long for t in out)
        assert ours.average_angle == 0


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(angle=float("nan")), ValueError, "angle"),
        (dict(angle="20"), TypeError, "angle"),
        (dict(distance=CosineSimilarity()), TypeError, "LpDistance"),
        (dict(distance=LpDistance(normalize_embeddings=False)), ValueError, "normalize"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        AngularMiner(**kwargs)


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        AngularMiner()(random_embeddings(4, 3), None)


@pytest.mark.parametrize("angle", [-5, 0, 90, 100])
def test_angles_outside_0_90_as_in_pml(angle):
    """PML accepts any angle: below 0 every triplet passes, from 90 degrees on none."""
    x, labels = random_embeddings(20, 4, seed=7), random_labels(20, 3, seed=7)
    ours, theirs = pair(angle, collect_stats=True)
    out = assert_parity(ours, theirs, x, labels)
    assert (len(out[0]) > 0) == (angle <= 0)
    assert ours.average_angle_above_threshold == pytest.approx(
        theirs.average_angle_above_threshold, rel=1e-5
    )
