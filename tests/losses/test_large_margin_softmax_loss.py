"""LargeMarginSoftmaxLoss: parity with PML (values, gradients w.r.t. embeddings and W, logits,
SGD steps), the cos(m theta) polynomial, and errors."""

import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import reducers, regularizers
from metricssl.distances import CosineSimilarity, DotProductSimilarity
from metricssl.losses.large_margin_softmax_loss import LargeMarginSoftmaxLoss
from tests.classification_parity import (
    check_bad_inputs,
    logits_parity,
    make_pair,
    sgd_parity,
    weight_loss_parity,
)
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = LargeMarginSoftmaxLoss, pml_losses.LargeMarginSoftmaxLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes

# PML's margin set-up calls scipy.special.binom on tensors, which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = make_pair(Ours, Theirs, num_classes=C, embedding_size=d, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize("margin", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_margins(margin, dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 16, dtype=dtype, margin=margin, scale=2)
    x = random_embeddings(40, 16, dtype, seed=margin)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))


def test_parity_bfloat16_against_float32():
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=torch.float32)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16 and ours.W.dtype == torch.bfloat16


def test_cosine_distance_with_power():
    ours, theirs = make_pair(
        Ours,
        Theirs,
        5,
        8,
        distance=pml_distances.CosineSimilarity(power=2),
        ours_kwargs=dict(distance=CosineSimilarity(power=2)),
    )
    weight_loss_parity(ours, theirs, random_embeddings(20, 8, torch.float64), random_labels(20, 5))


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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_stay_equal(dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 8, dtype=dtype)
    sgd_parity(ours, theirs, random_embeddings(30, 8, dtype, seed=6), random_labels(30, 5), lr=0.1)


def test_sum_reducer_and_weight_regularizer():
    ours, theirs = make_pair(
        Ours,
        Theirs,
        5,
        8,
        reducer=pml_reducers.SumReducer(),
        weight_regularizer=pml_regularizers.LpRegularizer(),
        ours_kwargs=dict(
            reducer=reducers.SumReducer(), weight_regularizer=regularizers.LpRegularizer()
        ),
    )
    weight_loss_parity(ours, theirs, random_embeddings(20, 8, torch.float64), random_labels(20, 5))


def test_collect_stats_avg_angle():
    ours, theirs = make_pair(Ours, Theirs, 5, 8, collect_stats=True)
    x, y = random_embeddings(20, 8, torch.float64), random_labels(20, 5)
    ours(x, y), theirs(x, y)
    assert ours.avg_angle == pytest.approx(theirs.avg_angle, rel=1e-9)


@pytest.mark.parametrize("margin", [1, 2, 3, 4, 7])
def test_cos_with_margin_is_cos_of_multiple_angle(margin):
    loss_fn = Ours(2, 2, margin=margin)
    theta = torch.linspace(0, math.pi, 101, dtype=torch.float64)
    got = loss_fn.get_cos_with_margin(torch.cos(theta))
    torch.testing.assert_close(got, torch.cos(margin * theta))
    # psi(theta) is continuous and decreasing on [0, pi] (the point of the k-terms)
    psi = loss_fn.modify_cosine_of_target_classes(torch.cos(theta[1:-1]))
    assert (psi.diff() < 0).all()


def test_defaults_and_attributes_match_pml():
    ours, theirs = make_pair(Ours, Theirs, 5, 8)
    assert (ours.margin, ours.scale, ours.num_classes) == (theirs.margin, theirs.scale, 5)
    assert isinstance(ours.margin, int)
    assert isinstance(ours.distance, CosineSimilarity)
    assert type(ours.reducer).__name__ == type(theirs.reducer).__name__
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert Ours(3, 4, margin=3.0).margin == 3


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_classes=0), ValueError),
        (dict(embedding_size=-2), ValueError),
        (dict(margin=0), ValueError),
        (dict(margin=2.5), ValueError),
        (dict(margin="4"), TypeError),
        (dict(scale=-1), ValueError),
        (dict(distance=DotProductSimilarity()), TypeError),
        (dict(weight_regularizer=3), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name if name != "distance" else "CosineSimilarity"):
        Ours(**{"num_classes": 3, "embedding_size": 4, **kwargs})


def test_bad_inputs():
    check_bad_inputs(Ours(3, 4), embedding_size=4, num_classes=3)
