"""MeanReducer against PML's."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.fused import FusedReduction
from metricssl.reducers.mean_reducer import MeanReducer
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
    v = grads_match(MeanReducer(), pml_reducers.MeanReducer(), reduction_type, emb, labels)
    if reduction_type != "already_reduced":
        losses, _ = make_losses(reduction_type)
        torch.testing.assert_close(v, losses.detach().mean())


def test_zero_loss_backpropagates():
    assert_zero_loss_backpropagates(MeanReducer(), *make_inputs())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_keeps_half_dtype(dtype):
    emb, labels = make_inputs(dtype=dtype)
    losses, idx = make_losses("triplet", dtype=dtype)
    out = MeanReducer()(loss_dict(losses, idx, "triplet"), emb, labels)
    assert out.dtype == dtype


def test_fused_rule_and_collect_stats():
    assert MeanReducer().fused() == FusedReduction(low=None, high=None, mean=True)
    r = MeanReducer(collect_stats=True)
    emb, labels = make_inputs()
    losses, idx = make_losses("pos_pair")
    r(loss_dict(losses, idx, "pos_pair"), emb, labels)
    assert r.losses_size == len(losses)
