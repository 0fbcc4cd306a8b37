"""ProxyAnchorLoss: parity with PML (values, gradients for embeddings and proxies, SGD steps)."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses.proxy_anchor_loss import ProxyAnchorLoss
from tests.learnable_parity import sgd_parity, weight_parity
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels


def pair(num_classes, dim, dtype=torch.float32, **kwargs):
    ours = ProxyAnchorLoss(num_classes, dim, **kwargs).to(dtype)
    theirs = pml_losses.ProxyAnchorLoss(num_classes, dim, **kwargs).to(dtype)
    return ours, theirs


def test_default_initialisation_draws_like_pml():
    # kaiming_normal_(mode="fan_out"), not the normal_ of a plain WeightMixin.
    torch.manual_seed(0)
    ours = ProxyAnchorLoss(7, 5)
    torch.manual_seed(0)
    theirs = pml_losses.ProxyAnchorLoss(7, 5)
    assert [n for n, _ in ours.named_parameters()] == ["proxies"]
    assert torch.equal(ours.proxies, theirs.proxies)


@pytest.mark.parametrize("n", [1, 8, 37])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, layout):
    labels = make_labels(n, layout)
    x = random_embeddings(n, 6, torch.float64, seed=n)
    weight_parity(*pair(int(labels.max()) + 3, 6, torch.float64), x, labels)


@pytest.mark.parametrize("margin, alpha", [(0.1, 32), (0.0, 1), (0.5, 64)])
def test_parity_float32_and_hyperparameters(margin, alpha):
    x = random_embeddings(48, 16, torch.float32, seed=3)
    labels = random_labels(48, 10)
    weight_parity(*pair(10, 16, margin=margin, alpha=alpha), x, labels)


def test_parity_bfloat16_against_float32():
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    labels = random_labels(40, 6)
    ours, theirs = pair(6, 16)
    v, _ = weight_parity(ours, theirs, x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16
    assert ours.proxies.dtype == torch.bfloat16  # as in PML


@pytest.mark.parametrize(
    "miner",
    [pml_miners.MultiSimilarityMiner(epsilon=0.1), pml_miners.BatchHardMiner()],
)
def test_indices_tuple_from_miner(miner):
    x = random_embeddings(40, 16, torch.float64, seed=5)
    labels = random_labels(40, 5)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    weight_parity(*pair(5, 16, torch.float64), x, labels, tuples)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (distances.DotProductSimilarity(), pml_distances.DotProductSimilarity()),
        (distances.LpDistance(), pml_distances.LpDistance()),
    ],
)
def test_distances(ours, theirs):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    labels = random_labels(30, 4)
    weight_parity(
        ProxyAnchorLoss(4, 8, alpha=4, distance=ours).double(),
        pml_losses.ProxyAnchorLoss(4, 8, alpha=4, distance=theirs).double(),
        x,
        labels,
    )


@pytest.mark.parametrize("name", ["MeanReducer", "SumReducer", "AvgNonZeroReducer"])
def test_reducers(name):
    x = random_embeddings(30, 8, torch.float64, seed=7)
    labels = random_labels(30, 6)
    weight_parity(
        ProxyAnchorLoss(8, 8, reducer=getattr(reducers, name)()).double(),
        pml_losses.ProxyAnchorLoss(8, 8, reducer=getattr(pml_reducers, name)()).double(),
        x,
        labels,
    )


def test_sub_losses_and_divisors():
    # pos_loss is averaged over the proxies whose class is in the batch, neg_loss over all.
    x = random_embeddings(10, 8, torch.float64, seed=8)
    labels = torch.tensor([0, 0, 1, 1, 1, 4, 4, 4, 4, 4])
    loss_fn = ProxyAnchorLoss(6, 8, reducer=reducers.DoNothingReducer())
    pml_fn = pml_losses.ProxyAnchorLoss(6, 8, reducer=pml_reducers.DoNothingReducer())
    with torch.no_grad():
        loss_fn.proxies.copy_(pml_fn.proxies)
    ours, theirs = loss_fn(x, labels), pml_fn(x, labels)
    for name in ["pos_loss", "neg_loss"]:
        assert ours[name]["divisor"] == theirs[name]["divisor"]
        torch.testing.assert_close(ours[name]["losses"], theirs[name]["losses"].double())
    assert ours["pos_loss"]["divisor"] == 3


def test_weight_regularizer():
    x = random_embeddings(30, 8, torch.float64, seed=9)
    labels = random_labels(30, 4)
    ours = ProxyAnchorLoss(
        4, 8, weight_regularizer=regularizers.LpRegularizer(), weight_reg_weight=0.3
    ).double()
    theirs = pml_losses.ProxyAnchorLoss(
        4, 8, weight_regularizer=pml_regularizers.LpRegularizer(), weight_reg_weight=0.3
    ).double()
    assert ours.sub_loss_names() == theirs.sub_loss_names()
    weight_parity(ours, theirs, x, labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_with_a_separate_loss_optimizer(dtype):
    x = random_embeddings(32, 8, dtype, seed=10)
    labels = random_labels(32, 5)
    sgd_parity(*pair(5, 8, dtype, alpha=8), x, labels, steps=3)


def test_get_logits():
    ours, theirs = pair(5, 8, torch.float64)
    with torch.no_grad():
        ours.proxies.copy_(theirs.proxies)
    x = random_embeddings(10, 8, torch.float64, seed=11)
    torch.testing.assert_close(ours.get_logits(x), theirs.get_logits(x))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_classes=0, embedding_size=4), ValueError, "num_classes"),
        (dict(num_classes=3, embedding_size=-1), ValueError, "embedding_size"),
        (dict(num_classes=3, embedding_size=4, margin="0.1"), TypeError, "margin"),
        (dict(num_classes=3, embedding_size=4, alpha=float("nan")), ValueError, "alpha"),
        (dict(num_classes=3, embedding_size=4, weight_init_func="normal"), TypeError, "weight_i"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ProxyAnchorLoss(**kwargs)


def test_bad_inputs():
    loss_fn = ProxyAnchorLoss(3, 4)
    x = random_embeddings(6, 4, torch.float32, seed=12)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match=r"\[0, 3\) \(num_classes=3\)"):
        loss_fn(x, torch.tensor([0, 1, 2, 5, 1, 2]))
    with pytest.raises(ValueError, match="embedding_size=4"):
        loss_fn(torch.randn(6, 3), labels)
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, labels, ref_emb=x.clone(), ref_labels=labels)
