"""UniformHistogramMiner: seeded parity with PML (same bins, same draws); properties."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.miners.uniform_histogram_miner import UniformHistogramMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    distance_pair,
    embeddings_and_ref,
)
from tests.parity import random_embeddings, random_labels


def pair(distance="lp", ours_distance=None, **args):
    ours_d, pml_d = distance_pair(distance)
    return (
        UniformHistogramMiner(distance=ours_distance or ours_d, **args),
        pml_miners.UniformHistogramMiner(distance=ours_distance or pml_d, **args),
    )


def assert_seeded_identical(ours, theirs, *inputs, seed):
    out = assert_parity(ours, theirs, *inputs, seed=seed)
    torch.manual_seed(seed)
    assert all(torch.equal(a, b) for a, b in zip(out, theirs(*inputs)))
    return out


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seeded_parity(n, d, layout, distance, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    ours, theirs = pair(distance, num_bins=20, pos_per_bin=3, neg_per_bin=2)
    assert_seeded_identical(ours, theirs, x, labels, seed=n)
    assert_seeded_identical(ours, theirs, x, labels, ref, ref_labels, seed=n + 1)


@pytest.mark.parametrize(
    "args", [{}, dict(num_bins=1, pos_per_bin=1, neg_per_bin=1), dict(num_bins=500)]
)
def test_seeded_parity_arguments(args):
    x, labels = random_embeddings(50, 8, seed=2), random_labels(50, 4, 2)
    assert_seeded_identical(*pair("lp", **args), x, labels, seed=3)
    assert_seeded_identical(*pair("cosine", **args), x, labels, seed=4)


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_seeded_parity_on_the_same_matrix(distance):
    # bf16 distances pile up on bin edges; PML's comparisons and our bucketize agree there.
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, "few", seed=5)
    ours, theirs = pair(distance, ours_distance=distance_pair(distance)[0], num_bins=30)
    assert_seeded_identical(ours, theirs, x, labels, seed=6)
    assert_seeded_identical(ours, theirs, x, labels, ref, ref_labels, seed=7)


def test_equal_distances_fall_in_the_last_bin():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ours, theirs = pair(num_bins=4, pos_per_bin=2, neg_per_bin=3)
    out = assert_seeded_identical(ours, theirs, x, torch.tensor([0, 0, 1, 1]), seed=0)
    assert [len(t) for t in out] == [2, 2, 3, 3]


def test_draws_come_from_each_non_empty_bin():
    x, labels = random_embeddings(40, 4, torch.float64, seed=8), random_labels(40, 3, 8)
    miner = UniformHistogramMiner(num_bins=10, pos_per_bin=4, neg_per_bin=5)
    a1, p, a2, n = miner(x, labels)
    mat = miner.distance(x)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    for (a, o), mask, per_bin in [
        ((a1, p), same & ~torch.eye(40, dtype=torch.bool), 4),
        ((a2, n), ~same, 5),
    ]:
        values = mat[mask]
        edges = torch.linspace(values.min(), values.max(), 11, dtype=values.dtype)
        bins = (torch.bucketize(values, edges, right=True) - 1).clamp(max=9)
        drawn = (torch.bucketize(mat[a, o], edges, right=True) - 1).clamp(max=9)
        assert torch.equal(
            torch.bincount(drawn, minlength=10), (torch.bincount(bins, minlength=10) > 0) * per_bin
        )
        assert mask[a, o].all()


def test_no_pairs_of_a_kind():
    x = random_embeddings(6, 4)
    out = assert_seeded_identical(*pair(), x, torch.arange(6), seed=0)
    assert len(out[0]) == 0 and out[0].dtype == torch.long and len(out[2]) > 0


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(num_bins=0), ValueError, "num_bins"),
        (dict(num_bins=2.5), TypeError, "num_bins"),
        (dict(pos_per_bin=0), ValueError, "pos_per_bin"),
        (dict(neg_per_bin=-1), ValueError, "neg_per_bin"),
        (dict(neg_per_bin=True), TypeError, "neg_per_bin"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        UniformHistogramMiner(**kwargs)


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        UniformHistogramMiner()(random_embeddings(4, 3), None)
