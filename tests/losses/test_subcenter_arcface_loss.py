"""SubCenterArcFaceLoss: parity with PML (values, gradients w.r.t. embeddings and W, logits, SGD
steps), get_outliers against PML's per-class loop, and errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricssl.core import chunking
from metricssl.losses.subcenter_arcface_loss import SubCenterArcFaceLoss
from tests.classification_parity import (
    check_bad_inputs,
    logits_parity,
    make_pair,
    sgd_parity,
    weight_loss_parity,
)
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = SubCenterArcFaceLoss, pml_losses.SubCenterArcFaceLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes


def pair(num_classes, embedding_size, **kwargs):
    # PML's constructor only takes num_classes and embedding_size by keyword.
    return make_pair(Ours, Theirs, num_classes=num_classes, embedding_size=embedding_size, **kwargs)


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = pair(C, d, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize(
    "args", [dict(sub_centers=1), dict(sub_centers=5, margin=10, scale=16), dict(margin=45)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_arguments(args, dtype):
    ours, theirs = pair(5, 16, dtype=dtype, **args)
    x = random_embeddings(40, 16, dtype, seed=2)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))


def test_parity_bfloat16_against_float32():
    ours, theirs = pair(6, 16, dtype=torch.float32, scale=16)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(
        ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32, rtol=5e-2
    )
    assert v.dtype == torch.bfloat16 and ours.W.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(dtype):
    ours, theirs = pair(6, 16, dtype=dtype)
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 6)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    assert len(tuples[0]) > 0
    weight_loss_parity(ours, theirs, x, labels, tuples)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_get_logits(dtype):
    ours, theirs = pair(9, 16, dtype=dtype)
    logits_parity(ours, theirs, random_embeddings(20, 16, dtype, seed=5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_stay_equal(dtype):
    ours, theirs = pair(5, 8, dtype=dtype, scale=8)
    sgd_parity(ours, theirs, random_embeddings(30, 8, dtype, seed=6), random_labels(30, 5))


def pml_outliers(theirs, x, labels, threshold):
    outliers, centers = theirs.get_outliers(x, labels, threshold=threshold)
    return outliers.long(), centers


@pytest.mark.parametrize("threshold", [0, 60, 75, 90, 120, 180])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_get_outliers_matches_pml(threshold, dtype):
    ours, theirs = pair(8, 16, dtype=dtype, sub_centers=4)
    x = random_embeddings(90, 16, dtype, seed=threshold)
    labels = random_labels(90, 7)  # class 7 has no samples
    outliers, centers = ours.get_outliers(x, labels, threshold=threshold)
    expected, expected_centers = pml_outliers(theirs, x, labels, threshold)
    assert outliers.dtype == torch.long and torch.equal(outliers, expected)
    assert centers.shape == (16, 8) and centers.dtype == dtype
    present = torch.unique(labels)
    torch.testing.assert_close(centers[:, present], expected_centers[:, present])
    assert torch.isnan(centers[:, 7]).all()
    if 0 < threshold < 180:
        assert 0 < len(outliers) < 90


def test_get_outliers_in_small_chunks_gives_the_same():
    ours, _ = pair(5, 16, sub_centers=3)
    x, labels = random_embeddings(50, 16, torch.float64, seed=1), random_labels(50, 5)
    whole = ours.get_outliers(x, labels)
    budget = chunking.get_memory_budget()
    chunking.set_memory_budget(3 * 16 * 8 * 7)  # 7 rows per chunk
    try:
        chunked = ours.get_outliers(x, labels)
    finally:
        chunking.set_memory_budget(budget)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_get_outliers_returns_the_pair_like_pml():
    ours, theirs = pair(3, 4)
    x, labels = random_embeddings(10, 4, torch.float64), random_labels(10, 3)
    got = ours.get_outliers(x, labels, return_dominant_centers=False)
    assert isinstance(got, tuple) and len(got) == 2
    assert len(theirs.get_outliers(x, labels, return_dominant_centers=False)) == 2
    assert not got[1].requires_grad


def test_get_outliers_bad_input():
    loss_fn = Ours(3, 4)
    x = torch.randn(6, 4)
    ok = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="threshold"):
        loss_fn.get_outliers(x, ok, threshold=181)
    with pytest.raises(TypeError, match="return_dominant_centers"):
        loss_fn.get_outliers(x, ok, return_dominant_centers="yes")
    with pytest.raises(ValueError, match="class ids"):
        loss_fn.get_outliers(x, ok + 3)
    with pytest.raises(ValueError, match="embedding_size=4"):
        loss_fn.get_outliers(torch.randn(6, 5), ok)
    with pytest.raises(ValueError, match="labels has length 5"):
        loss_fn.get_outliers(x, ok[:5])


def test_defaults_and_attributes_match_pml():
    ours, theirs = pair(5, 8)
    assert ours.margin == pytest.approx(theirs.margin)
    assert (ours.scale, ours.num_classes, ours.sub_centers) == (64, 5, 3)
    assert (theirs.scale, theirs.num_classes, theirs.sub_centers) == (64, 5, 3)
    assert ours.W.shape == theirs.W.shape == (8, 15)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert Ours(5, 8).W.shape == (8, 15)  # positional sizes work too (PML needs keywords)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_classes=0), ValueError),
        (dict(embedding_size=0), ValueError),
        (dict(sub_centers=0), ValueError),
        (dict(sub_centers=1.5), TypeError),
        (dict(margin=-200), ValueError),
        (dict(scale=0), ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name):
        Ours(**{"num_classes": 3, "embedding_size": 4, **kwargs})


def test_bad_inputs():
    check_bad_inputs(Ours(3, 4), embedding_size=4, num_classes=3)
