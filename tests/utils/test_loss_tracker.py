import torch
from pytorch_metric_learning.utils.loss_tracker import LossTracker as PMLLossTracker

from metricssl.utils.loss_tracker import LossTracker


def test_matches_pml():
    for weights in ({}, {"a": 0.5}, {"a": 2, "b": 0, "total_loss": 7}):
        trackers = []
        for cls in (LossTracker, PMLLossTracker):
            names = ["a", "b"]
            t = cls(names)
            assert names == ["a", "b", "total_loss"]  # the caller's list gains total_loss
            t.losses["a"] = torch.tensor(3.0, requires_grad=True) * 1  # a loss, not a leaf
            t.losses["b"] = 4.0
            t.update(weights)
            trackers.append(t)
        ours, theirs = trackers
        assert ours.loss_weights == theirs.loss_weights
        assert {k: float(v) for k, v in ours.losses.items()} == {
            k: float(v) for k, v in theirs.losses.items()
        }


def test_total_is_the_weighted_sum_and_keeps_the_graph():
    t = LossTracker(["metric_loss", "total_loss"])
    x = torch.tensor(2.0, requires_grad=True)
    t.losses["metric_loss"] = x * 3
    t.update({"metric_loss": 0.5})
    assert t.losses["total_loss"].item() == 3.0
    t.losses["total_loss"].backward()
    assert x.grad.item() == 1.5
