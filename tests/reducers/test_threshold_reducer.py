"""ThresholdReducer against PML's: low only, high only, both."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.fused import FusedReduction
from metricssl.reducers.threshold_reducer import ThresholdReducer
from tests.reducers.reducer_inputs import (
    REDUCTION_TYPES,
    assert_zero_loss_backpropagates,
    grads_match,
    loss_dict,
    make_inputs,
    make_losses,
)

BOUNDS = [dict(low=0.5), dict(high=0.8), dict(low=0.1, high=1.2), dict(low=-1.0), dict(low=0)]


@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("reduction_type", REDUCTION_TYPES)
def test_matches_pml(bounds, reduction_type):
    emb, labels = make_inputs()
    v = grads_match(
        ThresholdReducer(**bounds),
        pml_reducers.ThresholdReducer(**bounds),
        reduction_type,
        emb,
        labels,
    )
    if reduction_type != "already_reduced":
        losses = make_losses(reduction_type)[0].detach()
        keep = torch.ones_like(losses, dtype=torch.bool)
        if "low" in bounds:
            keep &= losses > bounds["low"]
        if "high" in bounds:
            keep &= losses < bounds["high"]
        torch.testing.assert_close(v, losses[keep].mean())


def test_nothing_in_range_gives_a_zero_that_backpropagates():
    emb, labels = make_inputs()
    losses = torch.tensor([0.1, 0.2, 0.3], dtype=emb.dtype, requires_grad=True)
    for bounds in [dict(low=5), dict(high=0.05), dict(low=0.2, high=0.2)]:
        out = ThresholdReducer(**bounds)(loss_dict(losses, torch.arange(3), "element"), emb, labels)
        assert out.item() == 0 and out.requires_grad
    assert_zero_loss_backpropagates(ThresholdReducer(low=0), emb, labels)


def test_stats():
    emb, labels = make_inputs()
    losses = torch.tensor([-1.0, 0.5, 1.0, 2.0, 3.0], dtype=emb.dtype)
    r = ThresholdReducer(low=0, high=2.5, collect_stats=True)
    r(loss_dict(losses, torch.arange(5), "element"), emb, labels)
    assert r.num_above_low == 4
    assert r.num_below_high == 3  # of the 4 above low
    assert r.num_past_filter == 3


def test_fused_rule():
    assert ThresholdReducer(low=0.1, high=2).fused() == FusedReduction(low=0.1, high=2, mean=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="low or high"):
        ThresholdReducer()
    with pytest.raises(AssertionError, match="low or high"):  # PML asserts
        ThresholdReducer()
    with pytest.raises(TypeError, match="low"):
        ThresholdReducer(low="0")
    with pytest.raises(TypeError, match="high"):
        ThresholdReducer(high=[1])
    with pytest.raises(ValueError, match="low"):
        ThresholdReducer(low=float("nan"))
