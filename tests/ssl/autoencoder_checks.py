"""Checks shared by the reconstruction methods' tests (context encoder, denoising
auto-encoder, VAE): tiny planar images, the loss on a fixed draw of the method's noise or
masks, and a state-dict round trip."""

import torch

from metricssl.ssl.method import Batch


def plane_views(n=32, seed=0):
    """Planes a + b * row + c * column: a hidden or corrupted part is predictable from the
    rest, so a small decoder can learn them."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = torch.randn(3, n, 1, 1, 1, generator=g)
    ramp = torch.linspace(-1, 1, 8)
    return [a + b * ramp.view(1, 1, 8, 1) + c * ramp.view(1, 1, 1, 8)]


def loss_before_and_after(method, views, lr, steps=30):
    """The loss on one fixed draw of the method's randomness before and after ``steps`` Adam
    steps on ``views`` (the draws change every step; the measurement does not)."""

    def loss_on_fixed_draw():
        torch.manual_seed(123)
        with torch.no_grad():
            return method.training_step(Batch(views))["loss"].item()

    before = loss_on_fixed_draw()
    opt = torch.optim.Adam(method.parameters(), lr=lr)
    torch.manual_seed(1)
    for _ in range(steps):
        loss = method.training_step(Batch(views))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, loss_on_fixed_draw()


def check_state_dict_round_trip(make):
    """Two steps of ``make()``, then its state dict loaded into a fresh ``make()``: the next
    step (same random draws) gives the same outputs. Returns the fresh method."""
    method = make()
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    for step in range(1, 3):
        loss = method.training_step(Batch(plane_views()))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_step_end(step, 10)
    fresh = make()
    fresh.load_state_dict(method.state_dict())
    torch.manual_seed(7)
    a = method.training_step(Batch(plane_views(seed=1)))
    torch.manual_seed(7)
    b = fresh.training_step(Batch(plane_views(seed=1)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    return fresh
