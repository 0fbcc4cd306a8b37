"""DivisorReducer against PML's."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.divisor_reducer import DivisorReducer
from tests.reducers.reducer_inputs import (
    REDUCTION_TYPES,
    assert_zero_loss_backpropagates,
    grads_match,
    loss_dict,
    make_inputs,
    make_losses,
)


@pytest.mark.parametrize("divisor", [1, 7, torch.tensor(3)])
@pytest.mark.parametrize("reduction_type", REDUCTION_TYPES)
def test_matches_pml(divisor, reduction_type):
    emb, labels = make_inputs()
    v = grads_match(
        DivisorReducer(),
        pml_reducers.DivisorReducer(),
        reduction_type,
        emb,
        labels,
        divisor=divisor,
    )
    if reduction_type != "already_reduced":
        losses = make_losses(reduction_type)[0].detach()
        torch.testing.assert_close(v, losses.sum() / divisor)


def test_divisor_zero_gives_a_zero_that_backpropagates():
    emb, labels = make_inputs()
    losses, idx = make_losses("triplet")
    r = DivisorReducer()
    out = r(loss_dict(losses, idx, "triplet", divisor=0), emb, labels)
    assert out.item() == 0
    (g,) = torch.autograd.grad(out, emb)
    assert torch.equal(g, torch.zeros_like(emb))
    assert_zero_loss_backpropagates(r, emb, labels, divisor=5)


def test_records_the_divisor():
    emb, labels = make_inputs()
    losses, idx = make_losses("element")
    r = DivisorReducer(collect_stats=True)
    r(loss_dict(losses, idx, "element", divisor=4), emb, labels)
    assert r.divisor == 4


def test_missing_divisor_is_a_clear_error():
    emb, labels = make_inputs()
    losses, idx = make_losses("element")
    with pytest.raises(ValueError, match="divisor"):
        DivisorReducer()(loss_dict(losses, idx, "element"), emb, labels)


def test_half_sum_does_not_overflow():
    # 2 x 60000 overflows float16; the sum is taken in float32.
    emb, labels = make_inputs(dtype=torch.float16)
    losses = torch.tensor([60000.0, 60000.0], dtype=torch.float16)
    out = DivisorReducer()(
        loss_dict(losses, torch.tensor([0, 1]), "element", divisor=4), emb, labels
    )
    assert out.dtype == torch.float16
    assert out.item() == 30000
