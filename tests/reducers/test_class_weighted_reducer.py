"""ClassWeightedReducer against PML's."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.class_weighted_reducer import ClassWeightedReducer
from tests.reducers.reducer_inputs import (
    REDUCTION_TYPES,
    assert_zero_loss_backpropagates,
    grads_match,
    loss_dict,
    make_inputs,
    make_losses,
)

WEIGHTS = torch.tensor([0.5, 2.0, 1.0, 3.0])


@pytest.mark.parametrize("reduction_type", REDUCTION_TYPES)
def test_matches_pml(reduction_type):
    emb, labels = make_inputs(num_classes=4)
    v = grads_match(
        ClassWeightedReducer(WEIGHTS.clone()),
        pml_reducers.ClassWeightedReducer(WEIGHTS.clone()),
        reduction_type,
        emb,
        labels,
    )
    if reduction_type not in ("already_reduced", "element"):
        losses, idx = make_losses(reduction_type)
        anchors = idx[0]
        expected = (losses.detach() * WEIGHTS.double()[labels[anchors]]).mean()
        torch.testing.assert_close(v, expected)


def test_weights_follow_the_losses_dtype():
    emb, labels = make_inputs(num_classes=4, dtype=torch.float32)
    losses, idx = make_losses("element", dtype=torch.float32)
    r = ClassWeightedReducer(WEIGHTS.double())
    out = r(loss_dict(losses, idx, "element"), emb, labels)
    assert out.dtype == torch.float32 and r.weights.dtype == torch.float32


def test_zero_loss_backpropagates():
    assert_zero_loss_backpropagates(ClassWeightedReducer(WEIGHTS), *make_inputs())


def test_errors():
    with pytest.raises(TypeError, match="weights"):
        ClassWeightedReducer([1.0, 2.0])
    with pytest.raises(TypeError, match="weights"):
        ClassWeightedReducer(torch.ones(2, 2))
    emb, _ = make_inputs()
    losses, idx = make_losses("element")
    with pytest.raises(ValueError, match="labels"):
        ClassWeightedReducer(WEIGHTS)(loss_dict(losses, idx, "element"), emb, None)
