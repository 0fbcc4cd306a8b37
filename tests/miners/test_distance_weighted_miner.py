"""DistanceWeightedMiner: seeded parity with PML (same weights, same draws); properties."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import miners as pml_miners

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.miners.distance_weighted_miner import DistanceWeightedMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    assert_valid_triplets,
    embeddings_and_ref,
)
from tests.parity import random_embeddings, random_labels


def assert_seeded_identical(ours, theirs, *inputs, seed):
    out = assert_parity(ours, theirs, *inputs, seed=seed)
    torch.manual_seed(seed)
    expected = theirs(*inputs)
    # Same draws in the same order, not only the same multiset.
    assert all(torch.equal(a, b) for a, b in zip(out, expected))
    return out


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seeded_parity(n, d, layout, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    ours, theirs = DistanceWeightedMiner(), pml_miners.DistanceWeightedMiner()
    out = assert_seeded_identical(ours, theirs, x, labels, seed=n)
    assert_valid_triplets(out, labels)
    out = assert_seeded_identical(ours, theirs, x, labels, ref, ref_labels, seed=n + 1)
    assert_valid_triplets(out, labels, ref_labels)


@pytest.mark.parametrize("cutoffs", [(0.0, 2.0), (0.8, 1.2), (1.2, 1.3), (0, -0.01), (-0.5, 1.4)])
def test_seeded_parity_with_cutoffs(cutoffs):
    x, labels = random_embeddings(60, 16, seed=2), random_labels(60, 5, 2)
    args = dict(cutoff=cutoffs[0], nonzero_loss_cutoff=cutoffs[1])
    ours, theirs = DistanceWeightedMiner(**args), pml_miners.DistanceWeightedMiner(**args)
    assert_seeded_identical(ours, theirs, x, labels, seed=3)


def test_negatives_respect_the_cutoff_and_follow_the_weights():
    # Anchor 0's negatives on the unit circle at chord distances 0.6 and 1.35, plus one at
    # 1.99, beyond nonzero_loss_cutoff, that must never be drawn. In D = 2 the weight is
    # d^0 (1 - d^2/4)^(1/2), so the two close ones are drawn about 56% / 44% of the time.
    chords = torch.tensor([0.6, 1.35], dtype=torch.float64)
    angles = torch.cat([torch.tensor([0.0, 0.1]), 2 * torch.asin(chords / 2), torch.tensor([3.0])])
    x = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    labels = torch.tensor([0, 0, 1, 2, 3])
    miner = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    torch.manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(1000):
        a, _, n = miner(x, labels)
        counts += torch.bincount(n[a == 0], minlength=5)
    assert counts[4] == 0 and counts[[0, 1]].sum() == 0
    w = (1 - 0.25 * chords**2) ** 0.5
    observed = counts[2:4].double() / counts[2:4].sum()
    assert torch.allclose(observed, w / w.sum(), atol=0.05)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bfloat16_valid_triplets(layout):
    # Weights are computed in float32 from the bf16 distances, so draws differ from PML's
    # bf16 arithmetic; check what must hold for any draw.
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, layout, seed=4)
    miner = DistanceWeightedMiner(nonzero_loss_cutoff=1.3)
    torch.manual_seed(0)
    for inputs in [(x, labels), (x, labels, ref, ref_labels)]:
        out = miner(*inputs)
        assert all(t.dtype == torch.long for t in out)
        assert_valid_triplets(out, labels, inputs[3] if len(inputs) == 4 else None)
        mat = miner.distance(x, inputs[2] if len(inputs) == 4 else None).float()
        assert (mat[out[0], out[2]].clamp(min=0.5) < 1.3).all()
        assert miner.num_triplets == len(out[0])


def test_every_anchor_gets_one_triplet_per_other_class_member():
    x, labels = random_embeddings(12, 8, seed=5), torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    a, p, n = DistanceWeightedMiner(nonzero_loss_cutoff=2.0)(x, labels)
    assert torch.equal(torch.bincount(a, minlength=12), torch.full((12,), 4))


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(cutoff="0.5"), TypeError, "cutoff"),
        (dict(nonzero_loss_cutoff=float("nan")), ValueError, "nonzero_loss_cutoff"),
        (dict(distance=CosineSimilarity()), TypeError, "LpDistance"),
        (dict(distance=LpDistance(normalize_embeddings=False)), ValueError, "normalize"),
        (dict(distance=LpDistance(p=1)), ValueError, "p=2"),
        (dict(distance=LpDistance(power=2)), ValueError, "power=1"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        DistanceWeightedMiner(**kwargs)


def test_pml_rejects_the_same_distances():
    """PML asserts: code catching AssertionError catches ours too."""
    for bad in (dict(normalize_embeddings=False), dict(p=1), dict(power=2)):
        with pytest.raises(AssertionError):
            pml_miners.DistanceWeightedMiner(distance=pml_distances.LpDistance(**bad))
        with pytest.raises(AssertionError):
            DistanceWeightedMiner(distance=LpDistance(**bad))
    with pytest.raises(AssertionError):
        pml_miners.DistanceWeightedMiner(distance=pml_distances.CosineSimilarity())
    with pytest.raises(AssertionError):
        DistanceWeightedMiner(distance=CosineSimilarity())


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        DistanceWeightedMiner()(random_embeddings(4, 3), None)
