"""HistogramLoss: parity with PML (bins, layouts, miner tuples, dtypes), where PML crashes,
edge cases and errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, regularizers
from metricssl.losses.histogram_loss import HistogramLoss, filter_pairs
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings

# PML 2.9 indexes with a list of lists, which torch warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")

BINS = [dict(), dict(n_bins=10), dict(delta=0.05), dict(n_bins=7), dict(delta=0.3)]


def pair(**kwargs):
    return HistogramLoss(**kwargs), pml_losses.HistogramLoss(**kwargs)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,d", [(2, 4), (9, 8), (40, 16)])
def test_parity_float64(layout, n, d):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(*pair(), x, make_labels(n, layout))


@pytest.mark.parametrize("kwargs", BINS)
@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bins(kwargs, layout):
    x = random_embeddings(30, 6, torch.float64, seed=1)
    loss_parity(*pair(**kwargs), x, make_labels(30, layout))


@pytest.mark.parametrize("miner", ["triplet", "pair"])
@pytest.mark.parametrize("with_labels", [True, False])
def test_parity_indices_tuple(miner, with_labels):
    x = random_embeddings(32, 8, torch.float64, seed=2)
    labels = make_labels(32, "many")
    if miner == "triplet":
        tup = pml_miners.TripletMarginMiner(margin=0.2)(x, labels)
    else:
        tup = pml_miners.MultiSimilarityMiner(epsilon=0.2)(x, labels)
    assert len(tup[0]) > 0
    loss_parity(*pair(n_bins=20), x, labels if with_labels else None, tup)


def test_parity_pair_tuple_with_unmatched_anchors():
    """Pairs whose anchor has no pair of the other kind belong to no triplet."""
    x = random_embeddings(8, 4, torch.float64, seed=3)
    tup = (
        torch.tensor([0, 0, 1, 5]),
        torch.tensor([1, 2, 0, 6]),
        torch.tensor([0, 1, 3, 3]),
        torch.tensor([4, 7, 2, 0]),
    )
    loss_parity(*pair(), x, None, tup)


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(layout):
    x = random_embeddings(64, 16, torch.float32, seed=4)
    v, _ = loss_parity(*pair(), x, make_labels(64, layout))
    assert v.dtype == torch.float32


def test_parity_bfloat16_against_float32():
    x = random_embeddings(48, 16, torch.bfloat16, seed=5)
    v, _ = loss_parity(*pair(n_bins=20), x, make_labels(48, "three"), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


def test_parity_with_regularizer():
    x = random_embeddings(20, 8, torch.float64, seed=6)
    ours = HistogramLoss(embedding_regularizer=regularizers.LpRegularizer())
    theirs = pml_losses.HistogramLoss(embedding_regularizer=pml_regularizers.LpRegularizer())
    loss_parity(ours, theirs, x, make_labels(20, "three"))


def test_identical_embeddings_use_the_edge_bin():
    """PML raises an index error when a similarity is exactly 1; the edge bin is used here."""
    x = random_embeddings(8, 4, torch.float64, seed=7)
    x[1] = x[0]
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with pytest.raises(RuntimeError):
        pml_losses.HistogramLoss()(x, labels)
    leaf = x.clone().requires_grad_(True)
    value = HistogramLoss()(leaf, labels)
    # Nudging the duplicate just below 1 changes the loss continuously.
    nudged = x.clone()
    nudged[1] += 1e-7 * torch.randn(
        4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(value, HistogramLoss()(nudged, labels), rtol=1e-4, atol=1e-6)
    value.backward()
    assert torch.isfinite(leaf.grad).all()


@pytest.mark.parametrize("labels", [torch.arange(6), torch.zeros(6, dtype=torch.long)])
def test_no_triplets_gives_a_zero_that_backpropagates(labels):
    x = random_embeddings(6, 4, torch.float64, seed=8, requires_grad=True)
    value = HistogramLoss()(x, labels)
    assert value.item() == 0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = torch.tensor([], dtype=torch.long)
    assert HistogramLoss()(x, None, (empty, empty, empty)).item() == 0


def test_attributes_match_pml():
    for kwargs in BINS:
        ours, theirs = pair(**kwargs)
        assert ours.delta == theirs.delta
        assert type(ours.distance).__name__ == type(theirs.distance).__name__


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(n_bins=10, delta=0.3), ValueError),
        (dict(n_bins=0), ValueError),
        (dict(n_bins=2.0), TypeError),
        (dict(delta=0), ValueError),
        (dict(delta=2.5), ValueError),
        (dict(delta="0.1"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        HistogramLoss(**kwargs)


def test_consistent_n_bins_and_delta_are_accepted():
    assert HistogramLoss(n_bins=50, delta=0.04).delta == 0.04


def test_bad_inputs():
    x, labels = torch.randn(6, 4), make_labels(6, "three")
    loss = HistogramLoss()
    with pytest.raises(ValueError, match="labels or an indices_tuple"):
        loss(x)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(x, labels, ref_emb=torch.randn(6, 4), ref_labels=labels)
    # Opposite embeddings of one class: an L2 distance of 2.
    opposite, labels = torch.cat([x[:3], -x[:3]]), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match=r"similarities in \[-1, 1\]"):
        HistogramLoss(distance=distances.LpDistance())(opposite, labels)
    with pytest.raises(ValueError, match=r"similarities in \[-1, 1\]"):
        HistogramLoss(distance=distances.DotProductSimilarity(normalize_embeddings=False))(
            x * 10, labels
        )


@pytest.mark.parametrize("n", [0, 1, 7])
def test_filter_pairs_matches_pml(n):
    from pytorch_metric_learning.losses.histogram_loss import filter_pairs as pml_filter_pairs

    g = torch.Generator().manual_seed(n)
    a, p = torch.randint(0, 4, (2, n), generator=g)
    assert filter_pairs(a, p) == pml_filter_pairs(a, p)
    assert filter_pairs(a, p, a) == pml_filter_pairs(a, p, a)


def test_inconsistent_bins_raise_what_pml_raises():
    """PML asserts delta == 2 / n_bins; ours is caught as an AssertionError too."""
    with pytest.raises(AssertionError):
        pml_losses.HistogramLoss(n_bins=1, delta=0.5)
    with pytest.raises(AssertionError, match="delta"):
        HistogramLoss(n_bins=1, delta=0.5)
