"""ZeroMeanRegularizer: PML's values and gradients, alone, on embeddings and on loss weights."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl.losses.contrastive_loss import ContrastiveLoss
from metricssl.reducers import SumReducer
from metricssl.regularizers.zero_mean_regularizer import ZeroMeanRegularizer
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings
from tests.regularizers.regularizer_cases import (
    SHAPES,
    reg_parity,
    weight_regularizer_parity,
    weights,
)


@pytest.mark.parametrize("rows, dim", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity(rows, dim, dtype):
    w = weights(rows, dim, dtype, seed=rows)
    reg_parity(ZeroMeanRegularizer(), pml_regularizers.ZeroMeanRegularizer(), w)
    reg_parity(
        ZeroMeanRegularizer(reducer=SumReducer()),
        pml_regularizers.ZeroMeanRegularizer(reducer=pml_reducers.SumReducer()),
        w,
    )


def test_bfloat16_against_pml_in_float32():
    w = weights(40, 64, torch.bfloat16, seed=1)
    reg_parity(
        ZeroMeanRegularizer(),
        pml_regularizers.ZeroMeanRegularizer(),
        w,
        reference_dtype=torch.float32,
    )


def test_known_value_and_zero_mean_rows():
    assert ZeroMeanRegularizer()(torch.tensor([[1.0, -3.0], [2.0, 2.0]])).item() == 3.0
    w = torch.tensor([[1.0, -1.0], [0.5, -0.5]], requires_grad=True)
    value = ZeroMeanRegularizer()(w)
    value.backward()
    assert value.item() == 0 and w.grad is not None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_as_embedding_regularizer(layout):
    x = random_embeddings(24, 8, torch.float64, seed=3)
    labels = make_labels(24, layout, seed=3)
    ours = ContrastiveLoss(embedding_regularizer=ZeroMeanRegularizer(), embedding_reg_weight=0.3)
    theirs = pml_losses.ContrastiveLoss(
        embedding_regularizer=pml_regularizers.ZeroMeanRegularizer(), embedding_reg_weight=0.3
    )
    loss_parity(ours, theirs, x, labels)


def test_as_weight_regularizer():
    weight_regularizer_parity(
        ZeroMeanRegularizer(), pml_regularizers.ZeroMeanRegularizer(), num_classes=5, dim=6
    )


def test_bad_input():
    with pytest.raises(ValueError, match="x"):
        ZeroMeanRegularizer()(torch.zeros(3))
    with pytest.raises(TypeError, match="x"):
        ZeroMeanRegularizer()(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="reducer"):
        ZeroMeanRegularizer(reducer="mean")
