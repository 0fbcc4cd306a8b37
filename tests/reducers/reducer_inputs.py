"""Loss dictionaries of every reduction type, and a parity check of a reducer against PML's."""

from __future__ import annotations

import torch

from tests.parity import random_labels

N = 12  # batch size the indices refer to
REDUCTION_TYPES = ["element", "pos_pair", "neg_pair", "triplet", "already_reduced"]


def make_inputs(seed=0, dtype=torch.float64, num_classes=3):
    """(embeddings, labels) with embeddings a leaf, so gradients of zero losses can be checked."""
    g = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(N, 4, generator=g, dtype=dtype).requires_grad_(True)
    return embeddings, random_labels(N, num_classes, seed=seed)


def make_losses(reduction_type, seed=0, dtype=torch.float64, size=20, zero_fraction=0.3):
    """A leaf tensor of losses (some exactly 0, a few negative) and matching indices."""
    g = torch.Generator().manual_seed(seed + 100)
    if reduction_type == "already_reduced":
        return torch.tensor(1.7, dtype=dtype).requires_grad_(True), None
    if reduction_type == "element":
        size = N
    losses = torch.randn(size, generator=g, dtype=dtype).abs() + 0.05
    losses[torch.rand(size, generator=g) < zero_fraction] = 0
    losses[0] = -0.5  # PML does not forbid negative losses; the threshold rules must see it
    idx = [torch.randint(0, N, (size,), generator=g) for _ in range(3)]
    indices = {
        "element": torch.arange(N),
        "pos_pair": (idx[0], idx[1]),
        "neg_pair": (idx[0], idx[2]),
        "triplet": (idx[0], idx[1], idx[2]),
    }[reduction_type]
    return losses.requires_grad_(True), indices


def loss_dict(losses, indices, reduction_type, name="loss", **extra):
    return {name: {"losses": losses, "indices": indices, "reduction_type": reduction_type, **extra}}


def grads_match(ours, theirs, reduction_type, embeddings, labels, seed=0, **extra):
    """Value and gradient w.r.t. the per-element losses agree with PML."""
    l1, idx = make_losses(reduction_type, seed=seed)
    l2 = l1.detach().clone().requires_grad_(True)
    v1 = ours(loss_dict(l1, idx, reduction_type, **extra), embeddings, labels)
    v2 = theirs(loss_dict(l2, idx, reduction_type, **extra), embeddings, labels)
    torch.testing.assert_close(v1, v2)
    (g1,) = torch.autograd.grad(v1, l1)
    (g2,) = torch.autograd.grad(v2, l2)
    torch.testing.assert_close(g1, g2)
    return v1


def assert_zero_loss_backpropagates(reducer, embeddings, labels, **extra):
    """A dictionary with losses == 0 gives a 0 connected to the embeddings (PML semantics)."""
    out = reducer(loss_dict(0, None, "already_reduced", **extra), embeddings, labels)
    assert out.item() == 0 and out.requires_grad
    (g,) = torch.autograd.grad(out, embeddings)
    assert torch.equal(g, torch.zeros_like(embeddings))
