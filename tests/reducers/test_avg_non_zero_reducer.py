"""AvgNonZeroReducer against PML's."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from metricssl.reducers.fused import FusedReduction
from tests.reducers.reducer_inputs import (
    REDUCTION_TYPES,
    assert_zero_loss_backpropagates,
    grads_match,
    loss_dict,
    make_inputs,
    make_losses,
)


@pytest.mark.parametrize("reduction_type", REDUCTION_TYPES)
def test_matches_pml(reduction_type):
    emb, labels = make_inputs()
    v = grads_match(
        AvgNonZeroReducer(), pml_reducers.AvgNonZeroReducer(), reduction_type, emb, labels
    )
    if reduction_type != "already_reduced":
        losses, _ = make_losses(reduction_type)
        losses = losses.detach()
        torch.testing.assert_close(v, losses[losses > 0].mean())


def test_all_zero_losses_give_a_zero_that_backpropagates():
    emb, labels = make_inputs()
    losses = torch.zeros(12, dtype=emb.dtype, requires_grad=True)
    out = AvgNonZeroReducer()(loss_dict(losses, torch.arange(12), "element"), emb, labels)
    assert out.item() == 0
    (g,) = torch.autograd.grad(out, emb)
    assert torch.equal(g, torch.zeros_like(emb))


def test_zero_loss_backpropagates():
    assert_zero_loss_backpropagates(AvgNonZeroReducer(), *make_inputs())


def test_fused_rule():
    assert AvgNonZeroReducer().fused() == FusedReduction(low=0, high=None, mean=True)
