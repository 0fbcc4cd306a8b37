"""NormalizedSoftmaxLoss: parity with PML (values, gradients w.r.t. embeddings and W, logits,
SGD steps) for several distances, and errors."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, regularizers
from metricssl.losses.normalized_softmax_loss import NormalizedSoftmaxLoss
from tests.classification_parity import (
    check_bad_inputs,
    logits_parity,
    make_pair,
    sgd_parity,
    weight_loss_parity,
)
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = NormalizedSoftmaxLoss, pml_losses.NormalizedSoftmaxLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes

DISTANCES = {
    "dot": (distances.DotProductSimilarity, pml_distances.DotProductSimilarity, {}),
    "dot_unnormalized": (
        distances.DotProductSimilarity,
        pml_distances.DotProductSimilarity,
        dict(normalize_embeddings=False),
    ),
    "cosine": (distances.CosineSimilarity, pml_distances.CosineSimilarity, {}),
    "lp": (distances.LpDistance, pml_distances.LpDistance, {}),
    "lp_squared": (distances.LpDistance, pml_distances.LpDistance, dict(power=2)),
}


def make(name, *args, **kwargs):
    ours_cls, pml_cls, dist_kwargs = DISTANCES[name]
    return make_pair(
        Ours,
        Theirs,
        *args,
        distance=pml_cls(**dist_kwargs),
        ours_kwargs=dict(distance=ours_cls(**dist_kwargs)),
        **kwargs,
    )


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = make_pair(Ours, Theirs, num_classes=C, embedding_size=d, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_distances(distance, dtype):
    ours, theirs = make(distance, 5, 16, dtype=dtype, temperature=0.5)
    x = random_embeddings(40, 16, dtype, seed=2)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))
    logits_parity(ours, theirs, x)


@pytest.mark.parametrize("temperature", [0.01, 1, 7])
def test_parity_temperatures(temperature):
    ours, theirs = make_pair(Ours, Theirs, 5, 16, temperature=temperature)
    x = random_embeddings(40, 16, torch.float64, seed=3)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))


def test_parity_bfloat16_against_float32():
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=torch.float32, temperature=0.2)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16 and ours.W.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(dtype):
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=dtype)
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 6)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    assert len(tuples[0]) > 0
    weight_loss_parity(ours, theirs, x, labels, tuples)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_get_logits(dtype):
    ours, theirs = make_pair(Ours, Theirs, 9, 16, dtype=dtype)
    logits_parity(ours, theirs, random_embeddings(20, 16, dtype, seed=5))


@pytest.mark.parametrize("distance", ["dot", "lp"])
def test_sgd_steps_stay_equal(distance):
    ours, theirs = make(distance, 5, 8, temperature=0.5)
    sgd_parity(ours, theirs, random_embeddings(30, 8, torch.float64, seed=6), random_labels(30, 5))


def test_weight_regularizer():
    ours, theirs = make_pair(
        Ours,
        Theirs,
        5,
        8,
        weight_regularizer=pml_regularizers.LpRegularizer(power=2),
        ours_kwargs=dict(weight_regularizer=regularizers.LpRegularizer(power=2)),
    )
    weight_loss_parity(ours, theirs, random_embeddings(20, 8, torch.float64), random_labels(20, 5))


def test_defaults_and_attributes_match_pml():
    ours, theirs = make_pair(Ours, Theirs, 5, 8)
    assert ours.temperature == theirs.temperature
    # PML 2.9 records these names without setting them (they read 0); ours hold the sizes.
    assert (ours.num_classes, ours.embedding_size) == (5, 8)
    assert type(ours.distance).__name__ == type(theirs.distance).__name__
    assert type(ours.reducer).__name__ == type(theirs.reducer).__name__
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_classes=0), ValueError),
        (dict(embedding_size=0), ValueError),
        (dict(temperature=0), ValueError),
        (dict(temperature="0.1"), TypeError),
        (dict(weight_init_func=1), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name):
        Ours(**{"num_classes": 3, "embedding_size": 4, **kwargs})


def test_bad_inputs():
    check_bad_inputs(Ours(3, 4), embedding_size=4, num_classes=3)
