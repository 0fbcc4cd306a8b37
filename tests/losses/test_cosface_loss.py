"""CosFaceLoss: parity with PML (values, gradients w.r.t. embeddings and W, logits, SGD steps)
and errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import reducers
from metricssl.distances import LpDistance
from metricssl.losses.cosface_loss import CosFaceLoss
from tests.classification_parity import (
    check_bad_inputs,
    logits_parity,
    make_pair,
    sgd_parity,
    weight_loss_parity,
)
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = CosFaceLoss, pml_losses.CosFaceLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = make_pair(Ours, Theirs, num_classes=C, embedding_size=d, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize(
    "args", [dict(margin=0, scale=1), dict(margin=0.1, scale=16), dict(margin=-0.2, scale=30)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_arguments(args, dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 16, dtype=dtype, **args)
    x = random_embeddings(40, 16, dtype, seed=2)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))


def test_parity_bfloat16_against_float32():
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=torch.float32, scale=16)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(
        ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32, rtol=5e-2
    )
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_stay_equal(dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 8, dtype=dtype, scale=8)
    sgd_parity(ours, theirs, random_embeddings(30, 8, dtype, seed=6), random_labels(30, 5))


def test_avg_nonzero_reducer():
    ours, theirs = make_pair(
        Ours,
        Theirs,
        5,
        8,
        reducer=pml_reducers.AvgNonZeroReducer(),
        ours_kwargs=dict(reducer=reducers.AvgNonZeroReducer()),
    )
    weight_loss_parity(ours, theirs, random_embeddings(20, 8, torch.float64), random_labels(20, 5))


def test_collect_stats_avg_angle():
    ours, theirs = make_pair(Ours, Theirs, 5, 8, collect_stats=True)
    x, y = random_embeddings(20, 8, torch.float64), random_labels(20, 5)
    ours(x, y), theirs(x, y)
    assert ours.avg_angle == pytest.approx(theirs.avg_angle, rel=1e-9)


def test_defaults_and_attributes_match_pml():
    ours, theirs = make_pair(Ours, Theirs, 5, 8)
    assert (ours.margin, ours.scale, ours.num_classes) == (theirs.margin, theirs.scale, 5)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_classes=0), ValueError),
        (dict(embedding_size=None), TypeError),
        (dict(margin=float("inf")), ValueError),
        (dict(margin=None), TypeError),
        (dict(scale=-64), ValueError),
        (dict(distance=LpDistance()), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name if name != "distance" else "CosineSimilarity"):
        Ours(**{"num_classes": 3, "embedding_size": 4, **kwargs})


def test_bad_inputs():
    check_bad_inputs(Ours(3, 4), embedding_size=4, num_classes=3)
