"""SmoothAPLoss: parity with PML where PML's positional grouping equals the labels, the
paper's definition elsewhere, miner weights, reducers, dtypes, chunking, errors."""

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.core import chunking
from metricssl.losses.smooth_ap import SmoothAPLoss
from tests.parity import loss_parity, random_embeddings

# PML 2.9 returns float32 whatever the input (its AP buffer is float32): float64 parity is
# limited by that.
PML_FLOAT64_TOL = dict(rtol=1e-6, atol=1e-8)


def blocks(num_classes, per_class):
    """[0]*m + [1]*m + ...: the layout PML's SmoothAP assumes."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def reference_losses(x, labels, temperature):
    """The paper's per-query loss, written out query by query (the query is in its own P)."""
    s = F.normalize(x, dim=1) @ F.normalize(x, dim=1).t()
    out = []
    for a in range(len(labels)):
        pos = torch.where(labels == labels[a])[0]
        sig = torch.sigmoid((s[a].unsqueeze(0) - s[a, pos].unsqueeze(1)) / temperature)
        sig = sig * (torch.arange(len(labels)) != pos.unsqueeze(1))
        all_rank = 1 + sig.sum(dim=1)
        pos_rank = 1 + sig[:, pos].sum(dim=1)
        out.append(1 - (pos_rank / all_rank).mean())
    return torch.stack(out)


@pytest.mark.parametrize("c", [2, 3, 5, 8])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("temperature", [0.01, 0.5])
def test_parity_float64(c, d, temperature):
    x = random_embeddings(c * c, d, torch.float64, seed=c + d)
    loss_parity(
        SmoothAPLoss(temperature=temperature),
        pml_losses.SmoothAPLoss(temperature=temperature),
        x,
        blocks(c, c),
        **PML_FLOAT64_TOL,
    )


@pytest.mark.parametrize("c", [3, 6])
def test_parity_float32(c):
    x = random_embeddings(c * c, 16, torch.float32, seed=c)
    v, _ = loss_parity(SmoothAPLoss(), pml_losses.SmoothAPLoss(), x, blocks(c, c))
    assert v.dtype == torch.float32


def test_parity_bfloat16_against_float32():
    x = random_embeddings(25, 16, torch.bfloat16, seed=4)
    ours, theirs = SmoothAPLoss(temperature=0.05), pml_losses.SmoothAPLoss(temperature=0.05)
    v, _ = loss_parity(ours, theirs, x, blocks(5, 5), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("miner", ["triplet", "pair"])
def test_parity_indices_tuple_weights(miner):
    x = random_embeddings(16, 8, torch.float64, seed=5)
    labels = blocks(4, 4)
    if miner == "triplet":
        tup = pml_miners.TripletMarginMiner(margin=0.2)(x, labels)
    else:
        tup = pml_miners.MultiSimilarityMiner(epsilon=0.2)(x, labels)
    assert len(tup[0]) > 0
    loss_parity(SmoothAPLoss(), pml_losses.SmoothAPLoss(), x, labels, tup, **PML_FLOAT64_TOL)


@pytest.mark.parametrize(
    "name,kwargs",
    [("SumReducer", {}), ("ThresholdReducer", {"low": 0.3}), ("AvgNonZeroReducer", {})],
)
def test_parity_reducers(name, kwargs):
    x = random_embeddings(16, 8, torch.float64, seed=6)
    ours = SmoothAPLoss(reducer=getattr(reducers, name)(**kwargs))
    theirs = pml_losses.SmoothAPLoss(reducer=getattr(pml_reducers, name)(**kwargs))
    loss_parity(ours, theirs, x, blocks(4, 4), **PML_FLOAT64_TOL)


def test_parity_do_nothing_reducer_and_regularizer():
    x = random_embeddings(9, 8, torch.float64, seed=7)
    labels = blocks(3, 3)
    ours = SmoothAPLoss(reducer=reducers.DoNothingReducer())(x, labels)
    theirs = pml_losses.SmoothAPLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)
    assert set(ours) == set(theirs) == {"ap_loss"}
    torch.testing.assert_close(
        ours["ap_loss"]["losses"], theirs["ap_loss"]["losses"].double(), **PML_FLOAT64_TOL
    )
    assert torch.equal(ours["ap_loss"]["indices"], theirs["ap_loss"]["indices"])
    loss_parity(
        SmoothAPLoss(embedding_regularizer=regularizers.LpRegularizer()),
        pml_losses.SmoothAPLoss(embedding_regularizer=pml_regularizers.LpRegularizer()),
        x,
        labels,
        **PML_FLOAT64_TOL,
    )


@pytest.mark.parametrize("num_classes,per_class", [(2, 5), (6, 2), (3, 4)])
def test_any_order_and_class_size_follow_the_labels(num_classes, per_class):
    """Where PML's positional blocks differ from the classes, the paper's definition holds."""
    n = num_classes * per_class
    labels = blocks(num_classes, per_class)[
        torch.randperm(n, generator=torch.Generator().manual_seed(n))
    ]
    x = random_embeddings(n, 6, torch.float64, seed=n, requires_grad=True)
    loss = SmoothAPLoss(temperature=0.1, reducer=reducers.DoNothingReducer())
    ours = loss(x, labels)["ap_loss"]["losses"]
    torch.testing.assert_close(ours, reference_losses(x, labels, 0.1))
    # Permuting the batch permutes the per-query losses.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss(x[perm], labels[perm])["ap_loss"]["losses"], ours[perm])


def test_gradient_matches_reference():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2])
    x1 = random_embeddings(12, 5, torch.float64, seed=9, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    SmoothAPLoss(temperature=0.2)(x1, labels).backward()
    reference_losses(x2, labels, 0.2).mean().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_chunking_gives_the_same_result():
    x = random_embeddings(24, 8, torch.float64, seed=10)
    labels = blocks(6, 4)
    before = chunking.get_memory_budget()
    results = []
    try:
        for budget in [1024, before]:
            chunking.set_memory_budget(budget)
            leaf = x.clone().requires_grad_(True)
            value = SmoothAPLoss()(leaf, labels)
            value.backward()
            results.append((value.detach(), leaf.grad))
    finally:
        chunking.set_memory_budget(before)
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


def test_one_class_is_perfect_and_singletons_give_a_zero_that_backpropagates():
    x = random_embeddings(6, 4, torch.float64, seed=11, requires_grad=True)
    value = SmoothAPLoss()(x, torch.zeros(6, dtype=torch.long))
    assert value.item() == pytest.approx(0, abs=1e-12)
    value = SmoothAPLoss()(x, torch.arange(6))
    assert value.item() == 0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_attributes_match_pml():
    ours, theirs = SmoothAPLoss(temperature=0.3), pml_losses.SmoothAPLoss(temperature=0.3)
    assert ours.temperature == theirs.temperature
    assert type(ours.distance).__name__ == type(theirs.distance).__name__ == "CosineSimilarity"
    assert type(ours.reducer).__name__ == type(theirs.reducer).__name__


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(temperature=0), ValueError),
        (dict(temperature=-0.1), ValueError),
        (dict(temperature="0.1"), TypeError),
        (dict(distance=distances.LpDistance()), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        SmoothAPLoss(**kwargs)


def test_bad_inputs():
    x, labels = torch.randn(6, 4), blocks(3, 2)
    loss = SmoothAPLoss()
    with pytest.raises(ValueError, match="needs labels"):
        loss(x)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(x, labels, ref_emb=torch.randn(6, 4), ref_labels=labels)
    with pytest.raises(ValueError, match=r"same number of samples.*\[3, 2, 1\]"):
        loss(x, torch.tensor([0, 0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="labels has length"):
        loss(x, blocks(2, 2))
    with pytest.raises(TypeError, match="embeddings"):
        loss(x.numpy(), labels)
