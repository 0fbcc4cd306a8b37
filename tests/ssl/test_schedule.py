"""Learning-rate warmup + cosine, and BYOL's momentum schedule."""

import math

import pytest
import torch

from metricssl.ssl.schedule import WarmupCosineSchedule, cosine_momentum, warmup_cosine


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10, 0.0) == pytest.approx(1 / 11)
    assert warmup_cosine(9, 100, 10, 0.0) == pytest.approx(10 / 11)
    assert warmup_cosine(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 100, 0, 0.0) == pytest.approx(1.0)


def test_cosine_momentum():
    assert cosine_momentum(0, 10, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(5, 10, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(10, 10, 0.99) == pytest.approx(1.0)


def test_schedule_sets_group_rates_keeps_fixed_groups_and_resumes():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "fixed_lr": True}], lr=0.2)
    sched = WarmupCosineSchedule(opt, total_steps=20, warmup_steps=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 / 5)
    for _ in range(12):
        sched.step()
    expected = 0.2 * 0.5 * (1 + math.cos(math.pi * 8 / 16))
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.2)
    opt2 = torch.optim.SGD([{"params": [a]}, {"params": [b], "fixed_lr": True}], lr=0.2)
    resumed = WarmupCosineSchedule(opt2, total_steps=20, warmup_steps=4)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.get_last_lr() == sched.get_last_lr()


def test_bad_arguments():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineSchedule(opt, total_steps=5, warmup_steps=5)
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosineSchedule(opt, total_steps=0)
    with pytest.raises(ValueError, match="final_factor"):
        WarmupCosineSchedule(opt, total_steps=5, final_factor=2)
