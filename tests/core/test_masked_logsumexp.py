"""masked_logsumexp: the same values and gradients as PML's logsumexp helper."""

import pytest
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

from metricssl.core.loss_and_miner_utils import masked_logsumexp
from tests.parity import TOLERANCES


def _value_and_grad(fn, x, weights):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    return out, grad


@pytest.mark.parametrize("add_one", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_pml(add_one, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 40, generator=g, dtype=dtype) * 30
    keep = torch.rand(30, 40, generator=g) > 0.7
    keep[3] = False  # an empty row
    keep[5] = True  # a full row
    weights = torch.arange(30, dtype=dtype).unsqueeze(1)
    ours = _value_and_grad(lambda t: masked_logsumexp(t, keep, add_one), x, weights)
    theirs = _value_and_grad(
        lambda t: pml_lmu.logsumexp(t, keep_mask=keep, add_one=add_one), x, weights
    )
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, **TOLERANCES[dtype])
    assert ours[0][3].item() == 0
    assert torch.equal(ours[1][~keep], torch.zeros_like(ours[1][~keep]))


def test_huge_masked_entries_leave_no_nan():
    # exp of a dropped entry would overflow; it must not reach the value or the gradient.
    x = torch.tensor([[1e4, 0.5, -2.0], [3.0, 1e4, 1e4]], requires_grad=True)
    keep = torch.tensor([[False, True, True], [True, False, False]])
    out = masked_logsumexp(x, keep, add_one=True)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    expected = torch.log(1 + torch.exp(torch.tensor([0.5])) + torch.exp(torch.tensor([-2.0])))
    torch.testing.assert_close(out[0, 0], expected[0])
