"""LARS: the trust-ratio update, exclusions, state dict."""

import pytest
import torch

from metricssl.ssl.lars import LARS


def test_update_matches_the_formula():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(3))
    w.grad, b.grad = torch.randn(4, 3), torch.randn(3)
    w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.02)
    opt.step()
    d = gw + 0.1 * w0
    trust = 0.02 * w0.norm() / d.norm()
    torch.testing.assert_close(w.detach(), w0 - 0.5 * trust * d)
    torch.testing.assert_close(b.detach(), b0 - 0.5 * gb)  # 1-D: plain SGD, no decay
    # Second step: heavy-ball momentum on the scaled direction.
    w1 = w.detach().clone()
    w.grad = gw.clone()
    opt.step()
    d1 = gw + 0.1 * w1
    v = 0.9 * trust * d + 0.02 * w1.norm() / d1.norm() * d1
    torch.testing.assert_close(w.detach(), w1 - 0.5 * v)


def test_zero_weights_fall_back_to_trust_one_and_state_round_trips():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.ones(2, 2)
    opt = LARS([w], lr=0.1, momentum=0.0)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.1))
    fresh = LARS([w], lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    assert torch.equal(fresh.state[w]["momentum_buffer"], opt.state[w]["momentum_buffer"])


@pytest.mark.parametrize(
    "kwargs", [{"lr": -1}, {"momentum": 1.0}, {"weight_decay": -0.1}, {"eta": 0}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        LARS([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)
