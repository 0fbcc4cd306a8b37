"""FastAPLoss: parity with PML (bins, powers, layouts, miner weights, reducers, dtypes),
edge cases and errors."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.fast_ap_loss import FastAPLoss
from tests.host_reads import count_host_reads
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings


def pair(num_bins=10, power=None, reducer=None):
    ours_kw, pml_kw = dict(num_bins=num_bins), dict(num_bins=num_bins)
    if power is not None:
        ours_kw["distance"] = distances.LpDistance(power=power)
        pml_kw["distance"] = pml_distances.LpDistance(power=power)
    if reducer is not None:
        name, args = reducer
        ours_kw["reducer"] = getattr(reducers, name)(**args)
        pml_kw["reducer"] = getattr(pml_reducers, name)(**args)
    return FastAPLoss(**ours_kw), pml_losses.FastAPLoss(**pml_kw)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,d", [(2, 4), (9, 8), (40, 16)])
def test_parity_float64(layout, n, d):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(*pair(), x, make_labels(n, layout))


@pytest.mark.parametrize("num_bins", [1, 3, 37])
@pytest.mark.parametrize("power", [1, 2, 0.5])
def test_parity_bins_and_power(num_bins, power):
    x = random_embeddings(30, 6, torch.float64, seed=num_bins)
    loss_parity(*pair(num_bins, power), x, make_labels(30, "many"))


def test_parity_duplicate_embeddings():
    """Distance 0 sits exactly on the first bin centre (a kink of PML's kernel)."""
    x = random_embeddings(12, 4, torch.float64, seed=1)
    x[6:] = x[:6]
    loss_parity(*pair(), x, make_labels(12, "three"))


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(layout):
    x = random_embeddings(64, 16, torch.float32, seed=2)
    v, _ = loss_parity(*pair(), x, make_labels(64, layout))
    assert v.dtype == torch.float32


def test_parity_bfloat16_against_float32():
    x = random_embeddings(48, 16, torch.bfloat16, seed=3)
    v, _ = loss_parity(*pair(), x, make_labels(48, "three"), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("miner", ["triplet", "pair"])
def test_parity_indices_tuple_weights(miner):
    x = random_embeddings(32, 8, torch.float64, seed=4)
    labels = make_labels(32, "many")
    if miner == "triplet":
        tup = pml_miners.TripletMarginMiner(margin=0.1)(x, labels)
    else:
        tup = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    assert len(tup[0]) > 0
    loss_parity(*pair(), x, labels, tup)


@pytest.mark.parametrize(
    "reducer",
    [
        ("SumReducer", {}),
        ("ThresholdReducer", {"low": 0.5}),
        ("AvgNonZeroReducer", {}),
        ("PerAnchorReducer", {}),
    ],
)
def test_parity_reducers(reducer):
    x = random_embeddings(30, 8, torch.float64, seed=5)
    loss_parity(*pair(reducer=reducer), x, make_labels(30, "three"))


def test_parity_do_nothing_reducer():
    x = random_embeddings(20, 8, torch.float64, seed=6)
    labels = make_labels(20, "many")
    ours, theirs = pair(reducer=("DoNothingReducer", {}))
    a, b = ours(x, labels)["loss"], theirs(x, labels)["loss"]
    torch.testing.assert_close(a["losses"], b["losses"])
    assert torch.equal(a["indices"], b["indices"])
    assert a["reduction_type"] == b["reduction_type"] == "element"


@pytest.mark.parametrize("labels", [torch.arange(7), torch.tensor([0])])
def test_no_positives_gives_a_zero_that_backpropagates(labels):
    x = random_embeddings(len(labels), 4, torch.float64, seed=7, requires_grad=True)
    value = FastAPLoss()(x, labels)
    assert value.item() == 0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_attributes_match_pml():
    ours, theirs = pair(num_bins=12)
    assert (ours.num_bins, ours.num_edges) == (theirs.num_bins, theirs.num_edges) == (12, 13)
    assert ours.distance.power == theirs.distance.power == 2


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(num_bins=0), ValueError),
        (dict(num_bins=2.5), TypeError),
        (dict(num_bins="10"), TypeError),
        (dict(distance=distances.CosineSimilarity()), TypeError),
        (dict(distance=distances.LpDistance(p=1)), ValueError),
        (dict(distance=distances.LpDistance(normalize_embeddings=False)), ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        FastAPLoss(**kwargs)


def test_bad_inputs():
    x, labels = torch.randn(6, 4), make_labels(6, "three")
    loss = FastAPLoss()
    with pytest.raises(ValueError, match="needs labels"):
        loss(x)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(x, labels, ref_emb=torch.randn(5, 4), ref_labels=labels[:5])
    with pytest.raises(ValueError, match="outside"):
        loss(x, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([9])))
    with pytest.raises(ValueError, match="2D"):
        loss(torch.randn(6), labels)


def test_the_zero_loss_check_reads_the_device_once(monkeypatch):
    """One host read (a synchronisation on CUDA) decides PML's zero loss, with or without
    positives (selecting the queries with positives syncs inside torch, not counted here)."""
    x = random_embeddings(16, 8, torch.float32, seed=0)
    for labels, expect_zero in ((torch.arange(16) % 4, False), (torch.arange(16), True)):
        with count_host_reads(monkeypatch) as reads:
            loss = FastAPLoss()(x, labels)
        assert reads["__bool__"] == 1, reads
        assert (loss == 0) == expect_zero
