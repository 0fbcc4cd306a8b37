"""Shared by the classification pretext tasks' tests (RotNet, Jigsaw)."""

import torch

from metricssl.ssl.method import Batch


def train_and_record(method, images, steps, accuracy_key):
    """``steps`` Adam steps on one batch; every step's loss and logged accuracy. Also checks
    each step's outputs: exactly the loss and the accuracy, the accuracy without a graph."""
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses, accuracies = [], []
    torch.manual_seed(1)
    for _ in range(steps):
        out = method.training_step(Batch([images]))
        assert set(out) == {"loss", accuracy_key}
        assert not out[accuracy_key].requires_grad
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
        accuracies.append(float(out[accuracy_key]))
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    return losses, accuracies
