"""BaseRegularizer: what every regularizer's call shares, checked against PML."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import losses, regularizers


@pytest.mark.parametrize(
    "name", ["LpRegularizer", "ZeroMeanRegularizer", "CenterInvariantRegularizer"]
)
def test_zero_rows_give_pmls_answer(name):
    """An empty batch's embeddings: PML's NaN (the mean of nothing), alone and as the
    embedding regularizer of a loss, and backward() runs."""
    x = torch.zeros(0, 5, requires_grad=True)
    value = getattr(regularizers, name)()(x)
    expected = getattr(pml_regularizers, name)()(x.detach())
    torch.testing.assert_close(value, expected, equal_nan=True)
    labels = torch.zeros(0, dtype=torch.long)
    loss = losses.ContrastiveLoss(embedding_regularizer=getattr(regularizers, name)())(x, labels)
    theirs = pml_losses.ContrastiveLoss(embedding_regularizer=getattr(pml_regularizers, name)())
    torch.testing.assert_close(loss, theirs(x.detach(), labels), equal_nan=True)
    loss.backward()
    assert x.grad.shape == (0, 5)
