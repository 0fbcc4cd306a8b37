"""frozen_running_stats: batch statistics inside, running statistics untouched."""

import pytest
import torch
from torch import nn

from metricssl.models.batchnorm import frozen_running_stats


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))


def test_running_stats_and_counter_are_left_alone_in_training_mode():
    model = net().train()
    model(torch.randn(8, 1, 6, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 1, 6, 6) * 3 + 2
    with frozen_running_stats(model):
        out = model(x)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    # Still normalised by the batch's own statistics, as in training mode.
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    # And tracking is back afterwards.
    model(x)
    assert not torch.equal(model[1].running_mean, before["1.running_mean"])
    assert int(model[1].num_batches_tracked) == 2


def test_eval_mode_still_uses_running_stats():
    model = net()
    model.train()(torch.randn(16, 1, 6, 6) + 1)
    model.eval()
    x = torch.randn(4, 1, 6, 6)
    expected = model(x)
    with frozen_running_stats(model):
        torch.testing.assert_close(model(x), expected)


def test_settings_are_restored_after_an_error_and_untracked_layers_stay_so():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(RuntimeError, match="boom"), frozen_running_stats(model):
        raise RuntimeError("boom")
    assert model[0].track_running_stats and not model[1].track_running_stats


def test_module_must_be_a_module():
    with pytest.raises(TypeError, match="module must be an nn.Module"), frozen_running_stats(3):
        pass
