"""MultiSimilarityMiner: PML's pairs, including its diagonal and "not a negative" rules."""

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.miners.multi_similarity_miner import MultiSimilarityMiner
from tests.miners.miner_cases import (
    LAYOUTS,
    SIZES,
    assert_parity,
    distance_pair,
    embeddings_and_ref,
)
from tests.parity import random_embeddings, random_labels


def pair(epsilon=0.1, distance="cosine", ours_distance=None):
    ours_d, pml_d = distance_pair(distance)
    return (
        MultiSimilarityMiner(epsilon=epsilon, distance=ours_distance or ours_d),
        pml_miners.MultiSimilarityMiner(epsilon=epsilon, distance=ours_distance or pml_d),
    )


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["lp", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity(n, d, layout, distance, dtype):
    x, labels, ref, ref_labels = embeddings_and_ref(n, d, dtype, True, layout, seed=n + d)
    for epsilon in [0.0, 0.1, 0.5]:
        ours, theirs = pair(epsilon, distance)
        assert_parity(ours, theirs, x, labels)
        assert_parity(ours, theirs, x, labels, ref, ref_labels)


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_query_as_reference_quirks(distance):
    # PML removes the diagonal from both sides when ref_emb *is* the query tensor, and treats
    # every pair that is not a negative as a positive candidate (and vice versa).
    x, labels = random_embeddings(24, 4, seed=2), random_labels(24, 3, 2)
    ours, theirs = pair(0.1, distance)
    assert_parity(ours, theirs, x, labels, x, labels.clone())
    assert_parity(ours, theirs, x, labels, x.clone(), labels)
    assert_parity(ours, theirs, x, labels, x.clone(), labels.clone())


@pytest.mark.parametrize("distance", ["lp", "cosine"])
def test_bfloat16_same_as_pml_on_the_same_matrix(distance):
    x, labels, ref, ref_labels = embeddings_and_ref(48, 16, torch.bfloat16, True, "few", seed=3)
    ours_distance = distance_pair(distance)[0]
    ours, theirs = pair(0.1, distance, ours_distance)
    assert_parity(ours, theirs, x, labels)
    assert_parity(ours, theirs, x, labels, ref, ref_labels)


def test_defaults_and_a_hand_checked_case():
    miner = MultiSimilarityMiner()
    assert isinstance(miner.distance, CosineSimilarity) and miner.epsilon == 0.1
    # Anchor 0: positive 1 at cosine 0.6 and negative 2 at 0.55; with epsilon 0.1 both are hard.
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.55, -((1 - 0.55**2) ** 0.5)]])
    a1, p, a2, n = miner(x, torch.tensor([0, 0, 1]))
    assert (0, 1) in set(zip(a1.tolist(), p.tolist()))
    assert (0, 2) in set(zip(a2.tolist(), n.tolist()))
    a1, p, a2, n = MultiSimilarityMiner(epsilon=0.0)(x, torch.tensor([0, 0, 1]))
    assert (0, 1) not in set(zip(a1.tolist(), p.tolist()))


def test_no_positive_or_no_negative_pairs():
    for labels in [torch.zeros(6, dtype=torch.long), torch.arange(6)]:
        out = assert_parity(*pair(), random_embeddings(6, 4), labels)
        assert all(t.numel() == 0 and t.dtype == torch.long for t in out)


@pytest.mark.parametrize(
    "kwargs, exc",
    [(dict(epsilon=-0.1), ValueError), (dict(epsilon="0.1"), TypeError)],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc, match="epsilon"):
        MultiSimilarityMiner(**kwargs)


def test_labels_required():
    with pytest.raises(ValueError, match="needs labels"):
        MultiSimilarityMiner()(random_embeddings(4, 3), None)
