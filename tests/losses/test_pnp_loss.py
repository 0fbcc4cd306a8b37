"""PNPLoss: parity with PML (every variant, layouts, dtypes), chunking, edge cases, errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, regularizers
from metricssl.core import chunking
from metricssl.losses.pnp_loss import PNPLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings

VARIANTS = ["O", "Ds", "Dq", "Iu", "Ib"]


def pair(**kwargs):
    return PNPLoss(**kwargs), pml_losses.PNPLoss(**kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,d", [(2, 4), (33, 16)])
def test_parity_float64(variant, layout, n, d):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(*pair(variant=variant), x, make_labels(n, layout))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(variant="Dq", alpha=4),
        dict(variant="Ib", b=0.5),
        dict(variant="Ds", anneal=0.2),
        dict(variant="Iu", anneal=1.0),
        dict(variant="O", anneal=0.001),
    ],
)
def test_parity_hyperparameters(kwargs):
    x = random_embeddings(40, 8, torch.float64, seed=1)
    loss_parity(*pair(**kwargs), x, make_labels(40, "many"))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(variant, layout):
    x = random_embeddings(48, 16, torch.float32, seed=2)
    v, _ = loss_parity(*pair(variant=variant), x, make_labels(48, layout))
    assert v.dtype == torch.float32


@pytest.mark.parametrize("variant", ["O", "Dq"])
def test_parity_bfloat16_against_float32(variant):
    x = random_embeddings(32, 16, torch.bfloat16, seed=3)
    ours, theirs = pair(variant=variant, anneal=0.05)
    v, _ = loss_parity(ours, theirs, x, make_labels(32, "three"), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


def test_parity_with_regularizer():
    x = random_embeddings(20, 8, torch.float64, seed=4)
    ours = PNPLoss(embedding_regularizer=regularizers.LpRegularizer())
    theirs = pml_losses.PNPLoss(embedding_regularizer=pml_regularizers.LpRegularizer())
    loss_parity(ours, theirs, x, make_labels(20, "three"))


def test_chunking_gives_the_same_result():
    x = random_embeddings(30, 8, torch.float64, seed=5)
    labels = make_labels(30, "three")
    before = chunking.get_memory_budget()
    results = []
    try:
        for budget in [1024, before]:
            chunking.set_memory_budget(budget)
            leaf = x.clone().requires_grad_(True)
            value = PNPLoss(variant="Ds")(leaf, labels)
            value.backward()
            results.append((value.detach(), leaf.grad))
    finally:
        chunking.set_memory_budget(before)
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_positives_gives_a_zero_that_backpropagates(variant):
    x = random_embeddings(6, 4, torch.float64, seed=6, requires_grad=True)
    value = PNPLoss(variant=variant)(x, torch.arange(6))
    assert value.item() == 0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_attributes_match_pml():
    ours, theirs = pair(b=3, alpha=2, anneal=0.1, variant="Ib")
    for name in ["b", "alpha", "anneal", "variant", "VARIANTS"]:
        assert getattr(ours, name) == getattr(theirs, name)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(variant="X"), ValueError),
        (dict(b=0), ValueError),
        (dict(b=-1), ValueError),
        (dict(anneal=0), ValueError),
        (dict(alpha="1"), TypeError),
        (dict(anneal=None), TypeError),
        (dict(distance=distances.LpDistance()), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        PNPLoss(**kwargs)


def test_bad_inputs():
    x, labels = torch.randn(6, 4), make_labels(6, "three")
    loss = PNPLoss()
    with pytest.raises(ValueError, match="needs labels"):
        loss(x)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(x, labels, ref_emb=torch.randn(6, 4), ref_labels=labels)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(x, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    loss(x, labels.float())  # float labels: compared by value, as in PML
