"""SphereFaceLoss: parity with PML (values, gradients w.r.t. embeddings and W, logits, SGD
steps) and errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricssl.distances import LpDistance
from metricssl.losses.sphereface_loss import SphereFaceLoss
from tests.classification_parity import (
    check_bad_inputs,
    logits_parity,
    make_pair,
    sgd_parity,
    weight_loss_parity,
)
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = SphereFaceLoss, pml_losses.SphereFaceLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes

# PML's margin set-up calls scipy.special.binom on tensors, which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = make_pair(Ours, Theirs, num_classes=C, embedding_size=d, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize("args", [dict(margin=1), dict(margin=2, scale=3), dict(margin=5)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_arguments(args, dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 16, dtype=dtype, **args)
    x = random_embeddings(40, 16, dtype, seed=2)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))


def test_parity_bfloat16_against_float32():
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=torch.float32)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16 and ours.W.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(dtype):
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=dtype)
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 6)
    tuples = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(x, labels)
    assert len(tuples[0]) > 0
    weight_loss_parity(ours, theirs, x, labels, tuples)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_get_logits(dtype):
    ours, theirs = make_pair(Ours, Theirs, 9, 16, dtype=dtype, scale=2)
    logits_parity(ours, theirs, random_embeddings(20, 16, dtype, seed=5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_stay_equal(dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 8, dtype=dtype)
    sgd_parity(ours, theirs, random_embeddings(30, 8, dtype, seed=6), random_labels(30, 5), lr=0.1)


def test_logits_ignore_weight_norms():
    loss_fn = Ours(4, 8).double()
    x = random_embeddings(6, 8, torch.float64)
    before = loss_fn.get_logits(x)
    with torch.no_grad():
        loss_fn.W.mul_(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(loss_fn.get_logits(x), before)


def test_defaults_and_attributes_match_pml():
    ours, theirs = make_pair(Ours, Theirs, 5, 8)
    assert (ours.margin, ours.scale, ours.num_classes) == (theirs.margin, theirs.scale, 5)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_classes=-1), ValueError),
        (dict(embedding_size=1.5), TypeError),
        (dict(margin=0.5), ValueError),
        (dict(scale=0), ValueError),
        (dict(distance=LpDistance()), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name if name != "distance" else "CosineSimilarity"):
        Ours(**{"num_classes": 3, "embedding_size": 4, **kwargs})


def test_bad_inputs():
    check_bad_inputs(Ours(3, 4), embedding_size=4, num_classes=3)
