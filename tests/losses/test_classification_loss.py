"""The shared base of the class-weight losses: dtype rules, label checks, miner weights."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from metricssl.distances import CosineSimilarity
from metricssl.losses.arcface_loss import ArcFaceLoss
from metricssl.losses.classification_loss import BaseClassificationLoss, SoftmaxClassificationLoss
from metricssl.losses.cosface_loss import CosFaceLoss
from metricssl.losses.large_margin_softmax_loss import LargeMarginSoftmaxLoss
from metricssl.losses.normalized_softmax_loss import NormalizedSoftmaxLoss
from metricssl.losses.p2s_grad_loss import P2SGradLoss
from metricssl.losses.sphereface_loss import SphereFaceLoss
from metricssl.losses.subcenter_arcface_loss import SubCenterArcFaceLoss
from tests.classification_parity import logits_parity, make_pair, weight_loss_parity
from tests.parity import random_embeddings, random_labels


@pytest.mark.parametrize(
    "x_dtype, w_dtype, expected",
    [
        (torch.float32, torch.float32, torch.float32),
        (torch.float64, torch.float32, torch.float64),
        (torch.float32, torch.float64, torch.float64),
        (torch.bfloat16, torch.float32, torch.float32),
        (torch.float16, torch.bfloat16, torch.float32),
        (torch.bfloat16, torch.bfloat16, torch.float32),
    ],
)
def test_compute_dtype(x_dtype, w_dtype, expected):
    loss_fn = ArcFaceLoss(3, 4).to(w_dtype)
    assert loss_fn.compute_dtype(torch.zeros(1, 4, dtype=x_dtype)) == expected


@pytest.mark.parametrize("cls", [ArcFaceLoss, NormalizedSoftmaxLoss, P2SGradLoss])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_follow_the_input_dtype_as_in_pml(cls, dtype):
    """PML casts its weights in place to each batch's dtype (same Parameter object)."""
    loss_fn = cls(8, 8)
    w = loss_fn.class_weights()
    x = random_embeddings(10, 8, dtype, requires_grad=True)
    loss = loss_fn(x, random_labels(10, 8))
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype
    assert loss_fn.class_weights() is w and w.dtype == dtype
    assert w.grad.dtype == dtype and torch.isfinite(w.grad).all()
    # half inputs are computed in float32: same value as float32 on the rounded inputs
    if dtype != torch.float64:
        ref = loss_fn(x.detach().float(), random_labels(10, 8))
        torch.testing.assert_close(loss.float(), ref, rtol=1e-2, atol=1e-2)


_WEIGHTED = {
    "ArcFaceLoss": "W",
    "CosFaceLoss": "W",
    "LargeMarginSoftmaxLoss": "W",
    "NormalizedSoftmaxLoss": "W",
    "SphereFaceLoss": "W",
    "SubCenterArcFaceLoss": "W",
    "ProxyNCALoss": "proxies",
    "ProxyAnchorLoss": "proxies",
    "SoftTripleLoss": "fc",
}


@pytest.mark.parametrize("name", sorted(_WEIGHTED))
def test_float64_batches_make_float64_weights_equal_to_pmls(name):
    """After a float64 batch the weights are float64 and equal PML's, so code that reads them
    (PML's own tests do: matmul(embeddings, loss.W)) computes in one dtype."""
    from metricssl import losses

    attr = _WEIGHTED[name]
    torch.manual_seed(0)
    ours = getattr(losses, name)(num_classes=4, embedding_size=8)
    torch.manual_seed(0)
    theirs = getattr(pml_losses, name)(num_classes=4, embedding_size=8)
    x, y = random_embeddings(10, 8, torch.float64), random_labels(10, 4)
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    w_ours, w_theirs = getattr(ours, attr), getattr(theirs, attr)
    assert w_ours.dtype == w_theirs.dtype == torch.float64
    torch.testing.assert_close(w_ours, w_theirs)
    torch.matmul(x, w_ours if w_ours.shape[0] == 8 else w_ours.t())  # one dtype: no error


def test_labels_of_any_integer_dtype():
    loss_fn = ArcFaceLoss(5, 4)
    x, y = random_embeddings(6, 4), random_labels(6, 5)
    expected = loss_fn(x, y)
    for dtype in (torch.int32, torch.uint8, torch.int16):
        torch.testing.assert_close(loss_fn(x, y.to(dtype)), expected)
    two = ArcFaceLoss(2, 4)
    b = torch.tensor([0, 1, 1, 0, 1, 0])
    torch.testing.assert_close(two(x, b.bool()), two(x, b))


def test_miner_weights_scale_each_sample():
    loss_fn = NormalizedSoftmaxLoss(4, 8)
    x, y = random_embeddings(6, 8, torch.float64), random_labels(6, 4)
    loss_fn.double()
    per_sample = loss_fn.compute_loss(x, y, None, x, y)["loss"]["losses"]
    a = torch.tensor([0, 0, 1])
    p = torch.tensor([2, 3, 2])
    n = torch.tensor([4, 4, 4])
    # counts: 0->2, 1->1, 2->2, 3->1, 4->3, 5->0; weights are counts / 3
    weights = torch.tensor([2, 1, 2, 1, 3, 0], dtype=torch.float64) / 3
    torch.testing.assert_close(loss_fn(x, y, (a, p, n)), (per_sample * weights).mean())


def test_bases_are_shared():
    assert issubclass(ArcFaceLoss, SoftmaxClassificationLoss)
    assert issubclass(NormalizedSoftmaxLoss, SoftmaxClassificationLoss)
    assert issubclass(P2SGradLoss, BaseClassificationLoss)
    assert not issubclass(P2SGradLoss, SoftmaxClassificationLoss)


MARGIN_LOSSES = [
    ("LargeMarginSoftmaxLoss", LargeMarginSoftmaxLoss),
    ("SphereFaceLoss", SphereFaceLoss),
    ("CosFaceLoss", CosFaceLoss),
    ("ArcFaceLoss", ArcFaceLoss),
    ("SubCenterArcFaceLoss", SubCenterArcFaceLoss),
]


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
@pytest.mark.parametrize("name, ours_cls", MARGIN_LOSSES)
@pytest.mark.parametrize("distance_kwargs", [dict(power=2), dict(p=1), dict(p=3, power=3)])
def test_margin_losses_with_other_cosine_settings(name, ours_cls, distance_kwargs):
    """power != 1 takes the general path (through the distance); p != 2 the fast one."""
    ours, theirs = make_pair(
        ours_cls,
        getattr(pml_losses, name),
        num_classes=5,
        embedding_size=8,
        scale=4,
        distance=pml_distances.CosineSimilarity(**distance_kwargs),
        ours_kwargs=dict(distance=CosineSimilarity(**distance_kwargs)),
    )
    x, y = random_embeddings(24, 8, torch.float64, seed=1), random_labels(24, 5)
    weight_loss_parity(ours, theirs, x, y)
    logits_parity(ours, theirs, x)


@pytest.mark.parametrize("cls", [ArcFaceLoss, NormalizedSoftmaxLoss, P2SGradLoss])
def test_nonfinite_embeddings_give_nan_with_a_warning(cls):
    loss_fn = cls(4, 3) if cls is P2SGradLoss else cls(3, 4)
    x = random_embeddings(5, 4)
    x[1, 2] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN"):
        loss = loss_fn(x, random_labels(5, 3))
    assert torch.isnan(loss)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
@pytest.mark.parametrize("name, ours_cls", MARGIN_LOSSES + [("P2SGradLoss", P2SGradLoss)])
@pytest.mark.parametrize("from_columns", [True, False])
@pytest.mark.parametrize("scale", [1, 16])
def test_both_target_paths_match_pml(name, ours_cls, from_columns, scale, monkeypatch):
    """Target cosines from W's columns (many classes) or gathered from the matrix (few)."""
    if ours_cls is P2SGradLoss:
        ours, theirs = make_pair(ours_cls, getattr(pml_losses, name), 8, 6)
    else:
        ours, theirs = make_pair(
            ours_cls, getattr(pml_losses, name), num_classes=6, embedding_size=8, scale=scale
        )
    monkeypatch.setattr(ours, "targets_from_columns", lambda: from_columns)
    x, y = random_embeddings(20, 8, torch.float64, seed=scale), random_labels(20, 6)
    weight_loss_parity(ours, theirs, x, y)
