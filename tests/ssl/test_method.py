"""The shared pieces of ssl/method.py that several methods build on."""

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from metricssl.ssl.method import (
    MethodConfig,
    MomentumConfigMixin,
    MomentumTargets,
    SSLMethod,
    param,
)


@dataclass(frozen=True)
class _Config(MomentumConfigMixin, MethodConfig):
    width: int = param(4, low=1, integer=True)
    momentum: float | None = param(0.9, low=0, high=1, allow_none=True)
    final_momentum: float = param(1.0, low=0, high=1)


class _Method(MomentumTargets, SSLMethod):
    momentum_targets = {"target_backbone": "backbone", "target_head": "head"}

    def __init__(self, momentum: float, final_momentum: float):
        super().__init__(nn.Linear(3, 4), feature_dim=4)
        self.head = nn.Linear(4, 2)
        self.init_momentum_targets(momentum, final_momentum)


def test_final_momentum_below_momentum_is_refused_by_name():
    with pytest.raises(ValueError, match="final_momentum"):
        _Config(momentum=0.9, final_momentum=0.8)
    _Config(momentum=None, final_momentum=0.5)  # no momentum encoder: nothing to cross-check
    assert list(_Config().as_dict()) == ["width", "momentum", "final_momentum"]


def test_targets_are_frozen_copies_in_declared_order():
    torch.manual_seed(0)
    method = _Method(0.5, 1.0)
    names = [k for k in method.state_dict() if k.startswith("target_")]
    assert names == [
        "target_backbone.weight",
        "target_backbone.bias",
        "target_head.weight",
        "target_head.bias",
    ]
    assert not any(p.requires_grad for p in method.target_head.parameters())
    assert torch.equal(method.target_head.weight, method.head.weight)


def test_on_step_end_is_an_ema_with_the_cosine_momentum():
    torch.manual_seed(0)
    method = _Method(0.5, 1.0)
    before = method.target_head.weight.clone()
    with torch.no_grad():
        method.head.weight.add_(1.0)
    step, total = 3, 10
    m = 1.0 - 0.5 * (math.cos(math.pi * step / total) + 1) / 2
    assert method.current_momentum(step, total) == pytest.approx(m)
    method.on_step_end(step, total)
    expected = m * before + (1 - m) * method.head.weight
    torch.testing.assert_close(method.target_head.weight, expected)
    # The backbone did not move, so neither does its target.
    torch.testing.assert_close(method.target_backbone.weight, method.backbone.weight)
