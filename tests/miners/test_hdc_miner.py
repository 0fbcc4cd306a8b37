"""HDCMiner: PML's hardest fractions, and its set_idx_externally / reset_idx cascade."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.miners.hdc_miner import HDCMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    distance_pair,
    embeddings_and_ref,
    same_tuples,
)
from tests.parity import random_embeddings, random_labels


def pair(filter_percentage=0.5, distance="lp", ours_distance=None):
    ours_d, pml_d = distance_pair(distance)
    return (
        HDCMiner(filter_percentage=filter_percentage, distance=ours_distance or ours_d),
        pml_miners.HDCMiner(filter_percentage=filter_percentage, distance=ours_distance or pml_d),
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity(n, d, layout, distance, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    for fraction in [0.1, 0.5, 1.0]:
        ours, theirs = pair(fraction, distance)
        assert_parity(ours, theirs, x, labels)
        assert_parity(ours, theirs, x, labels, ref, ref_labels)


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_same_as_pml_on_the_same_matrix(distance):
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, "few", seed=3)
    ours, theirs = pair(0.3, distance, ours_distance=distance_pair(distance)[0])
    assert_parity(ours, theirs, x, labels)
    assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_keeps_the_hardest_fraction():
    x, labels = random_embeddings(30, 4, torch.float64, seed=4), random_labels(30, 3, 4)
    miner = HDCMiner(filter_percentage=0.25)
    a1, p, a2, n = miner(x, labels)
    mat = miner.distance(x)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    pos_d = mat[same & ~torch.eye(30, dtype=torch.bool)]
    neg_d = mat[~same]
    assert len(a1) == -(-len(pos_d) // 4) and len(a2) == -(-len(neg_d) // 4)
    assert mat[a1, p].min() >= pos_d.sort(descending=True).values[len(a1) - 1]
    assert mat[a2, n].max() <= neg_d.sort().values[len(a2) - 1]


@pytest.mark.parametrize("external", ["pairs", "triplets", None])
def test_set_idx_externally_cascades_like_pml(external):
    x, labels = random_embeddings(40, 8, seed=5), random_labels(40, 4, 5)
    ours, theirs = pair(0.5)
    if external == "pairs":
        given = pml_miners.PairMarginMiner(0.1, 1.5)(x, labels)
    elif external == "triplets":
        given = pml_miners.TripletMarginMiner(0.1)(x, labels)
    else:
        given = None
    ours.set_idx_externally(given, labels)
    theirs.set_idx_externally(given, labels)
    assert ours.was_set_externally
    # While set externally, every call filters the previous call's output again.
    sizes = []
    for _ in range(3):
        out = assert_parity(ours, theirs, x, labels)
        same_tuples((ours.a1, ours.p, ours.a2, ours.n), out)
        sizes.append(len(out[0]))
    assert sizes[0] >= sizes[1] >= sizes[2]
    ours.reset_idx()
    theirs.reset_idx()
    assert not ours.was_set_externally and ours.a1 is None
    assert_parity(ours, theirs, x, labels)


def test_set_idx_externally_rejects_malformed_tuples():
    miner = HDCMiner()
    labels = torch.arange(4)
    with pytest.raises(TypeError):
        miner.set_idx_externally((torch.tensor([0]), torch.tensor([1])), labels)
    with pytest.raises(ValueError, match="outside"):
        miner.set_idx_externally((torch.tensor([7]), torch.tensor([1]), torch.tensor([2])), labels)


def test_empty_sides():
    for labels in [torch.zeros(5, dtype=torch.long), torch.arange(5)]:
        out = assert_parity(*pair(), random_embeddings(5, 3), labels)
        assert all(t.dtype == torch.long for t in out)


@pytest.mark.parametrize("value, exc", [(1.5, ValueError), (-0.1, ValueError), ("half", TypeError)])
def test_bad_arguments(value, exc):
    with pytest.raises(exc, match="filter_percentage"):
        HDCMiner(filter_percentage=value)


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        HDCMiner()(random_embeddings(4, 3), None)


def test_filter_percentage_zero_keeps_nothing_as_in_pml():
    x, labels = random_embeddings(12, 4), random_labels(12, 3)
    ours, theirs = pair(filter_percentage=0)
    mined, expected = ours(x, labels), theirs(x, labels)
    assert [len(t) for t in mined] == [len(t) for t in expected] == [0, 0, 0, 0]
