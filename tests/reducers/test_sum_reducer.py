"""SumReducer against PML's."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.fused import FusedReduction
from metricssl.reducers.sum_reducer import SumReducer
from tests.reducers.reducer_inputs import (
    REDUCTION_TYPES,
    assert_zero_loss_backpropagates,
    grads_match,
    make_inputs,
    make_losses,
)


@pytest.mark.parametrize("reduction_type", REDUCTION_TYPES)
def test_matches_pml(reduction_type):
    emb, labels = make_inputs()
    v = grads_match(SumReducer(), pml_reducers.SumReducer(), reduction_type, emb, labels)
    if reduction_type != "already_reduced":
        losses, _ = make_losses(reduction_type)
        torch.testing.assert_close(v, losses.detach().sum())


def test_zero_loss_backpropagates():
    assert_zero_loss_backpropagates(SumReducer(), *make_inputs())


def test_fused_rule():
    assert SumReducer().fused() == FusedReduction(mean=False)
