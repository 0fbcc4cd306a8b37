"""BatchEasyHardMiner: PML's picks for every strategy pair and range; argument checks."""

import itertools

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.miners.batch_easy_hard_miner import BatchEasyHardMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    distance_pair,
    embeddings_and_ref,
)
from tests.parity import random_embeddings, random_labels

STRATEGIES = ["easy", "semihard", "hard", "all"]
VALID = [
    (p, n)
    for p, n in itertools.product(STRATEGIES, STRATEGIES)
    if not (p == n == "semihard") and {p, n} != {"semihard", "all"}
]
RANGES = {"lp": (0.4, 1.3), "cosine": (-0.5, 0.6)}


def pair(pos, neg, distance="lp", ranges=False, collect_stats=False, ours_distance=None):
    ours_d, pml_d = distance_pair(distance)
    args = dict(pos_strategy=pos, neg_strategy=neg, collect_stats=collect_stats)
    if ranges:
        args.update(allowed_pos_range=RANGES[distance], allowed_neg_range=RANGES[distance])
    ours = BatchEasyHardMiner(distance=ours_distance or ours_d, **args)
    return ours, pml_miners.BatchEasyHardMiner(distance=ours_distance or pml_d, **args)


def test_valid_combinations_are_pml_s():
    for p, n in itertools.product(STRATEGIES, STRATEGIES):
        try:
            pml_miners.BatchEasyHardMiner(p, n)
            accepted = True
        except ValueError:
            accepted = False
        assert ((p, n) in VALID) == accepted
        if not accepted:
            with pytest.raises(ValueError, match="semihard"):
                BatchEasyHardMiner(p, n)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_parity_float64(n, d, layout, distance):
    x, labels, _, _ = embeddings_and_ref(n, d, torch.float64, False, layout, seed=n + d)
    for p, neg in VALID:
        assert_parity(*pair(p, neg, distance), x, labels)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("ranges", [False, True])
def test_parity_float32_ref_emb_and_ranges(layout, distance, ranges):
    x, labels, ref, ref_labels = embeddings_and_ref(40, 8, torch.float32, True, layout, seed=2)
    for p, n in VALID:
        ours, theirs = pair(p, n, distance, ranges)
        assert_parity(ours, theirs, x, labels)
        assert_parity(ours, theirs, x, labels, ref, ref_labels)


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_ties_broken_like_pml(distance):
    # bf16 distances tie often; on the same matrix PML's min/max picks the same columns.
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, "few", seed=4)
    ours_distance = distance_pair(distance)[0]
    for p, n in VALID:
        ours, theirs = pair(p, n, distance, ranges=True, ours_distance=ours_distance)
        assert_parity(ours, theirs, x, labels)
        assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_semihard_picks_respect_the_other_side():
    x, labels = random_embeddings(40, 8, torch.float64, seed=5), random_labels(40, 4, 5)
    miner = BatchEasyHardMiner("easy", "semihard")
    a, p, _, n = miner(x, labels)
    mat = miner.distance(x)
    assert (mat[a, n] > mat[a, p]).all()
    miner = BatchEasyHardMiner("semihard", "hard")
    a, p, _, n = miner(x, labels)
    assert (mat[a, p] < mat[a, n]).all()


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_stats_match_pml(distance):
    x, labels = random_embeddings(40, 8, seed=6), random_labels(40, 4, 6)
    names = [
        "easiest_triplet",
        "hardest_triplet",
        "easiest_pos_pair",
        "hardest_pos_pair",
        "easiest_neg_pair",
        "hardest_neg_pair",
    ]
    for p, n in VALID:
        ours, theirs = pair(p, n, distance, collect_stats=True)
        assert_parity(ours, theirs, x, labels)
        for name in names:
            assert getattr(ours, name) == pytest.approx(getattr(theirs, name)), name


def test_empty_output_when_no_pairs():
    x = random_embeddings(5, 4)
    for labels in [torch.zeros(5, dtype=torch.long), torch.arange(5)]:
        for p, n in VALID:
            out = assert_parity(*pair(p, n), x, labels)
            assert all(t.dtype == torch.long for t in out)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(pos_strategy="hardest"), ValueError, "pos_strategy"),
        (dict(neg_strategy="Easy"), ValueError, "neg_strategy"),
        (dict(allowed_pos_range=0.5), TypeError, "allowed_pos_range"),
        (dict(allowed_pos_range=(0.1, 0.2, 0.3)), TypeError, "allowed_pos_range"),
        (dict(allowed_neg_range=("a", 1)), TypeError, "allowed_neg_range"),
        (dict(distance=torch.nn.Identity()), TypeError, "distance"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        BatchEasyHardMiner(**kwargs)


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        BatchEasyHardMiner()(random_embeddings(4, 3), None)


def test_an_empty_range_allows_nothing_as_in_pml():
    """low > high: PML accepts it and mines nothing of that kind."""
    x, labels = random_embeddings(12, 4), random_labels(12, 3)
    kwargs = dict(allowed_pos_range=(1.0, 0.5))
    mined = BatchEasyHardMiner(**kwargs)(x, labels)
    expected = pml_miners.BatchEasyHardMiner(**kwargs)(x, labels)
    assert [len(t) for t in mined] == [len(t) for t in expected]
