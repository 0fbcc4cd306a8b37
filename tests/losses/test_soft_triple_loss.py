"""SoftTripleLoss: parity with PML (values, gradients for embeddings and centres, SGD steps)."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses.soft_triple_loss import SoftTripleLoss
from tests.learnable_parity import sgd_parity, weight_parity
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels


def pair(num_classes, dim, dtype=torch.float32, **kwargs):
    ours = SoftTripleLoss(num_classes, dim, **kwargs).to(dtype)
    theirs = pml_losses.SoftTripleLoss(num_classes, dim, **kwargs).to(dtype)
    return ours, theirs


def test_default_initialisation_draws_like_pml():
    # kaiming_uniform_(a=sqrt(5)), not the normal_ of a plain WeightMixin.
    torch.manual_seed(0)
    ours = SoftTripleLoss(7, 5, centers_per_class=3)
    torch.manual_seed(0)
    theirs = pml_losses.SoftTripleLoss(7, 5, centers_per_class=3)
    assert [n for n, _ in ours.named_parameters()] == ["fc"]
    assert ours.fc.shape == (5, 21)
    assert torch.equal(ours.fc, theirs.fc)
    assert ours.gamma == theirs.gamma == 10.0  # PML stores 1 / gamma


@pytest.mark.parametrize("n", [1, 8, 37])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, layout):
    labels = make_labels(n, layout)
    x = random_embeddings(n, 6, torch.float64, seed=n)
    weight_parity(*pair(int(labels.max()) + 3, 6, torch.float64, centers_per_class=4), x, labels)


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(centers_per_class=1), dict(la=5, gamma=0.5, margin=0.2)],
)
def test_parity_float32_and_hyperparameters(kwargs):
    x = random_embeddings(48, 16, torch.float32, seed=3)
    labels = random_labels(48, 10)
    weight_parity(*pair(10, 16, **kwargs), x, labels)


def test_parity_bfloat16_against_float32():
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    labels = random_labels(40, 6)
    ours, theirs = pair(6, 16, centers_per_class=3)
    v, _ = weight_parity(ours, theirs, x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16
    assert ours.fc.dtype == torch.bfloat16  # as in PML


def test_matches_the_paper_formula():
    # Eq. (8) of Qian et al.: relaxed class similarity, then a scaled softmax with a margin.
    ours = SoftTripleLoss(3, 4, centers_per_class=2, la=7, gamma=0.2, margin=0.3).double()
    x = random_embeddings(5, 4, torch.float64, seed=5)
    labels = torch.tensor([0, 1, 2, 2, 0])
    w = F.normalize(ours.fc.detach().t(), dim=1)
    s = (F.normalize(x, dim=1) @ w.t()).view(5, 3, 2)
    sim = (torch.softmax(s / 0.2, dim=2) * s).sum(dim=2)
    expected = []
    for i in range(5):
        z = 7 * sim[i]
        z[labels[i]] -= 7 * 0.3
        expected.append(-torch.log_softmax(z, dim=0)[labels[i]])
    torch.testing.assert_close(ours(x, labels), torch.stack(expected).mean())


@pytest.mark.parametrize(
    "miner",
    [pml_miners.MultiSimilarityMiner(epsilon=0.1), pml_miners.BatchHardMiner()],
)
def test_indices_tuple_from_miner(miner):
    x = random_embeddings(40, 16, torch.float64, seed=6)
    labels = random_labels(40, 5)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    weight_parity(*pair(5, 16, torch.float64, centers_per_class=3), x, labels, tuples)


def test_dot_product_similarity():
    x = random_embeddings(30, 8, torch.float64, seed=7)
    labels = random_labels(30, 4)
    weight_parity(
        SoftTripleLoss(4, 8, la=2, distance=distances.DotProductSimilarity()).double(),
        pml_losses.SoftTripleLoss(
            4, 8, la=2, distance=pml_distances.DotProductSimilarity()
        ).double(),
        x,
        labels,
    )


@pytest.mark.parametrize("name", ["SumReducer", "AvgNonZeroReducer", "ThresholdReducer"])
def test_reducers(name):
    kwargs = dict(low=2.0) if name == "ThresholdReducer" else {}
    x = random_embeddings(30, 8, torch.float64, seed=8)
    labels = random_labels(30, 4)
    weight_parity(
        SoftTripleLoss(4, 8, reducer=getattr(reducers, name)(**kwargs)).double(),
        pml_losses.SoftTripleLoss(4, 8, reducer=getattr(pml_reducers, name)(**kwargs)).double(),
        x,
        labels,
    )


def test_weight_regularizer():
    x = random_embeddings(30, 8, torch.float64, seed=9)
    labels = random_labels(30, 4)
    ours = SoftTripleLoss(
        4, 8, weight_regularizer=regularizers.LpRegularizer(), weight_reg_weight=0.3
    ).double()
    theirs = pml_losses.SoftTripleLoss(
        4, 8, weight_regularizer=pml_regularizers.LpRegularizer(), weight_reg_weight=0.3
    ).double()
    assert ours.sub_loss_names() == theirs.sub_loss_names()
    weight_parity(ours, theirs, x, labels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_with_a_separate_loss_optimizer(dtype):
    x = random_embeddings(32, 8, dtype, seed=10)
    labels = random_labels(32, 5)
    sgd_parity(*pair(5, 8, dtype, centers_per_class=3), x, labels, steps=3)


def test_get_logits():
    ours, theirs = pair(5, 8, torch.float64, centers_per_class=2)
    with torch.no_grad():
        ours.fc.copy_(theirs.fc)
    x = random_embeddings(10, 8, torch.float64, seed=11)
    torch.testing.assert_close(ours.get_logits(x), theirs.get_logits(x))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_classes=0, embedding_size=4), ValueError, "num_classes"),
        (dict(num_classes=3, embedding_size=0), ValueError, "embedding_size"),
        (dict(num_classes=3, embedding_size=4, centers_per_class=0), ValueError, "centers_per"),
        (dict(num_classes=3, embedding_size=4, centers_per_class=2.5), TypeError, "centers_per"),
        (dict(num_classes=3, embedding_size=4, gamma=0), ValueError, "gamma"),
        (dict(num_classes=3, embedding_size=4, la="20"), TypeError, "la"),
        (dict(num_classes=3, embedding_size=4, margin=math.nan), ValueError, "margin"),
        (
            dict(num_classes=3, embedding_size=4, distance=distances.LpDistance()),
            ValueError,
            "distance",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SoftTripleLoss(**kwargs)


def test_bad_inputs():
    loss_fn = SoftTripleLoss(3, 4)
    x = random_embeddings(6, 4, torch.float32, seed=12)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match=r"\[0, 3\) \(num_classes=3\)"):
        loss_fn(x, torch.tensor([0, 1, 2, 3, 1, 2]))
    with pytest.raises(ValueError, match="embedding_size=4"):
        loss_fn(torch.randn(6, 8), labels)
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, labels, ref_emb=x.clone(), ref_labels=labels)
