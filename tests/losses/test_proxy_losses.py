"""ProxyNCALoss: parity with PML (values, gradients for embeddings and proxies, SGD steps)."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses.proxy_losses import ProxyNCALoss
from tests.learnable_parity import sgd_parity, weight_parity
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels


def pair(num_classes, dim, dtype=torch.float32, **kwargs):
    ours = ProxyNCALoss(num_classes, dim, **kwargs).to(dtype)
    theirs = pml_losses.ProxyNCALoss(num_classes, dim, **kwargs).to(dtype)
    return ours, theirs


def test_default_initialisation_draws_like_pml():
    torch.manual_seed(0)
    ours = ProxyNCALoss(7, 5)
    torch.manual_seed(0)
    theirs = pml_losses.ProxyNCALoss(7, 5)
    assert [n for n, _ in ours.named_parameters()] == ["proxies"]
    assert torch.equal(ours.proxies, theirs.proxies)


@pytest.mark.parametrize("n", [1, 8, 37])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, layout):
    labels = make_labels(n, layout)
    x = random_embeddings(n, 6, torch.float64, seed=n)
    weight_parity(*pair(int(labels.max()) + 3, 6, torch.float64), x, labels)


@pytest.mark.parametrize("softmax_scale", [0.5, 1, 10])
def test_parity_float32_and_scales(softmax_scale):
    x = random_embeddings(48, 16, torch.float32, seed=3)
    labels = random_labels(48, 10)
    weight_parity(*pair(10, 16, softmax_scale=softmax_scale), x, labels)


def test_parity_bfloat16_against_float32():
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    labels = random_labels(40, 6)
    ours, theirs = pair(6, 16)
    v, _ = weight_parity(ours, theirs, x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16
    # As in PML, the proxies follow the input's dtype (cast in place).
    assert ours.proxies.dtype == torch.bfloat16


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
        (distances.CosineSimilarity(), pml_distances.CosineSimilarity()),
        (
            distances.LpDistance(normalize_embeddings=False),
            pml_distances.LpDistance(normalize_embeddings=False),
        ),
    ],
)
def test_distances(ours, theirs):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    labels = random_labels(30, 4)
    weight_parity(
        ProxyNCALoss(4, 8, softmax_scale=3, distance=ours).double(),
        pml_losses.ProxyNCALoss(4, 8, softmax_scale=3, distance=theirs).double(),
        x,
        labels,
    )


@pytest.mark.parametrize("name", ["SumReducer", "ThresholdReducer", "PerAnchorReducer"])
def test_reducers(name):
    kwargs = dict(low=1.0) if name == "ThresholdReducer" else {}
    x = random_embeddings(30, 8, torch.float64, seed=7)
    labels = random_labels(30, 4)
    weight_parity(
        ProxyNCALoss(4, 8, reducer=getattr(reducers, name)(**kwargs)).double(),
        pml_losses.ProxyNCALoss(4, 8, reducer=getattr(pml_reducers, name)(**kwargs)).double(),
        x,
        labels,
    )


def test_weight_regularizer():
    x = random_embeddings(30, 8, torch.float64, seed=8)
    labels = random_labels(30, 4)
    ours = ProxyNCALoss(
        4, 8, weight_regularizer=regularizers.LpRegularizer(), weight_reg_weight=0.3
    ).double()
    theirs = pml_losses.ProxyNCALoss(
        4, 8, weight_regularizer=pml_regularizers.LpRegularizer(), weight_reg_weight=0.3
    ).double()
    assert ours.sub_loss_names() == theirs.sub_loss_names() == ["loss", "weight_reg_loss"]
    weight_parity(ours, theirs, x, labels)


def test_custom_weight_init_func():
    ours = ProxyNCALoss(3, 4, weight_init_func=torch.nn.init.ones_)
    assert torch.equal(ours.proxies.detach(), torch.ones(3, 4))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_with_a_separate_loss_optimizer(dtype):
    x = random_embeddings(32, 8, dtype, seed=9)
    labels = random_labels(32, 5)
    sgd_parity(*pair(5, 8, dtype), x, labels, steps=3)


def test_get_logits():
    ours, theirs = pair(5, 8, torch.float64)
    with torch.no_grad():
        ours.proxies.copy_(theirs.proxies)
    x = random_embeddings(10, 8, torch.float64, seed=10)
    torch.testing.assert_close(ours.get_logits(x), theirs.get_logits(x))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_classes=0, embedding_size=4), ValueError, "num_classes"),
        (dict(num_classes=2.0, embedding_size=4), TypeError, "num_classes"),
        (dict(num_classes=3, embedding_size=0), ValueError, "embedding_size"),
        (dict(num_classes=3, embedding_size=4, softmax_scale=0), ValueError, "softmax_scale"),
        (dict(num_classes=3, embedding_size=4, weight_init_func=1), TypeError, "weight_init_func"),
        (dict(num_classes=3, embedding_size=4, weight_regularizer="l2"), TypeError, "weight_reg"),
        (dict(num_classes=3, embedding_size=4, weight_reg_weight="1"), TypeError, "weight_reg_w"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ProxyNCALoss(**kwargs)


def test_bad_inputs():
    loss_fn = ProxyNCALoss(3, 4)
    x = random_embeddings(6, 4, torch.float32, seed=11)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match=r"\[0, 3\) \(num_classes=3\)"):
        loss_fn(x, torch.tensor([0, 1, 2, 3, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 3\) \(num_classes=3\)"):
        loss_fn(x, torch.tensor([0, 1, -1, 0, 1, 2]))
    with pytest.raises(ValueError, match="embedding_size=4"):
        loss_fn(torch.randn(6, 5), labels)
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, labels, ref_emb=x.clone(), ref_labels=labels)


def test_improbable_own_proxy_keeps_its_exact_loss():
    # With a large scale an embedding's own proxy can have probability below float32's
    # range; PML then drops the embedding, here its loss is the exact -log_softmax.
    x = random_embeddings(16, 4, torch.float32, seed=13).requires_grad_()
    labels = random_labels(16, 5)
    loss_fn = ProxyNCALoss(5, 4, softmax_scale=500)
    value = loss_fn(x, labels)
    z = torch.nn.functional.normalize(x.detach().double(), dim=1)
    p = torch.nn.functional.normalize(loss_fn.proxies.detach().double(), dim=1)
    per_row = -torch.log_softmax(-500 * torch.cdist(z, p) ** 2, dim=1)[torch.arange(16), labels]
    assert per_row.max() > 100
    torch.testing.assert_close(value.double(), per_row.mean(), rtol=1e-4, atol=1e-4)
    value.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss_fn.proxies.grad).all()
