"""Shared checks for regularizer tests: value/gradient parity with PML, alone and inside a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import BaseMetricLossFunction as PMLBaseLoss
from pytorch_metric_learning.losses.mixins import WeightRegularizerMixin as PMLWeightMixin

from metricssl.losses.base_metric_loss_function import BaseMetricLossFunction
from metricssl.losses.mixins import WeightRegularizerMixin
from tests.parity import TOLERANCES

# (rows, dim): a single row, two rows, a few, and enough rows for several chunks.
SHAPES = [(1, 4), (2, 3), (7, 16), (50, 32)]


def weights(rows, dim, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=g, dtype=torch.float64).to(dtype)


def reg_parity(ours, theirs, w, reference_dtype=None, **tol):
    """ours(w) == theirs(w) in value and gradient; PML runs in ``reference_dtype`` if given."""
    tol = {**TOLERANCES[w.dtype], **tol}
    w1 = w.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().to(reference_dtype or w.dtype).requires_grad_(True)
    v1, v2 = ours(w1), theirs(w2)
    assert v1.dtype == w.dtype
    torch.testing.assert_close(v1.detach().double(), v2.detach().double(), **tol)
    (g1,) = torch.autograd.grad(v1, w1)
    (g2,) = torch.autograd.grad(v2, w2)
    torch.testing.assert_close(g1.double(), g2.double(), **tol)
    return v1, v2


def _classifier_loss(module, embeddings, labels):
    """A toy loss with class weights W: per-sample cross-entropy of embeddings @ W.T."""
    losses = F.cross_entropy(embeddings @ module.W.t(), labels, reduction="none")
    loss_dict = {
        "loss": {
            "losses": losses,
            "indices": torch.arange(len(labels), device=labels.device),
            "reduction_type": "element",
        }
    }
    module.add_weight_regularization_to_loss_dict(loss_dict, module.W)
    return loss_dict


class OursWeightLoss(WeightRegularizerMixin, BaseMetricLossFunction):
    def __init__(self, num_classes, dim, weight_regularizer=None, weight_reg_weight=1):
        super().__init__(weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight)
        self.W = torch.nn.Parameter(torch.randn(num_classes, dim, dtype=torch.float64))

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        return _classifier_loss(self, embeddings, labels)


class PMLWeightLoss(PMLWeightMixin, PMLBaseLoss):
    def __init__(self, num_classes, dim, weight_regularizer=None, weight_reg_weight=1):
        super().__init__(weight_regularizer=weight_regularizer, weight_reg_weight=weight_reg_weight)
        self.W = torch.nn.Parameter(torch.randn(num_classes, dim, dtype=torch.float64))

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        return _classifier_loss(self, embeddings, labels)


def weight_regularizer_parity(ours_reg, pml_reg, num_classes, dim, reg_weight=0.5, steps=3):
    """Both regularizers as a loss's weight_regularizer: same value, gradients w.r.t. the
    embeddings and W, and the same W after a few SGD steps from the same start."""
    ours = OursWeightLoss(num_classes, dim, ours_reg, reg_weight)
    theirs = PMLWeightLoss(num_classes, dim, pml_reg, reg_weight)
    plain = OursWeightLoss(num_classes, dim)
    ours.W.data.copy_(theirs.W.data)
    assert "weight_reg_loss" in ours.sub_loss_names()
    opt1 = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt2 = torch.optim.SGD(theirs.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(num_classes + dim)
    tol = TOLERANCES[torch.float64]
    for _ in range(steps):
        x = torch.randn(12, dim, generator=g, dtype=torch.float64)
        labels = torch.randint(0, num_classes, (12,), generator=g)
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        v1, v2 = ours(x1, labels), theirs(x2, labels)
        torch.testing.assert_close(v1, v2, **tol)
        with torch.no_grad():  # the total is the loss plus the weighted penalty
            plain.W.copy_(ours.W)
            expected = plain(x, labels) + reg_weight * ours_reg(ours.W)
        torch.testing.assert_close(v1.detach(), expected, **tol)
        opt1.zero_grad()
        opt2.zero_grad()
        v1.backward()
        v2.backward()
        torch.testing.assert_close(x1.grad, x2.grad, **tol)
        torch.testing.assert_close(ours.W.grad, theirs.W.grad, **tol)
        opt1.step()
        opt2.step()
        torch.testing.assert_close(ours.W.data, theirs.W.data, **tol)
