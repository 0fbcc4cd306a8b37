"""Seeded per-sample parameter draws.

Every augmentation draws its random parameters through these helpers: one small tensor per
parameter for the whole batch, never one Python random number per image.

Where the numbers come from:

- with a ``generator``, they are drawn on the generator's device (so a CPU generator gives
  the same parameters whether the images are on the CPU or on CUDA) and then moved to the
  images' device;
- without one, they are drawn from torch's default generator of the images' device, so
  ``torch.manual_seed`` makes a run reproducible and no host-device copy is needed.
"""

from __future__ import annotations

import math

import torch


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def rand(
    shape: int | tuple[int, ...],
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) float32 numbers of ``shape``, on ``device``."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    u = torch.rand(shape, generator=generator, device=_draw_device(generator, device))
    return u.to(device)


def uniform(
    n: int,
    low: float,
    high: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` float32 numbers uniform in [low, high)."""
    return rand(n, device, generator).mul_(high - low).add_(low)


def log_uniform(
    shape: int | tuple[int, ...],
    low: float,
    high: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Numbers whose logarithm is uniform in [log(low), log(high)) (aspect ratios)."""
    lo, hi = math.log(low), math.log(high)
    return rand(shape, device, generator).mul_(hi - lo).add_(lo).exp_()


def coin(
    n: int,
    p: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` booleans, each True with probability ``p``.

    ``p = 1`` is always True and ``p = 0`` always False, because the draws lie in [0, 1).
    """
    return rand(n, device, generator) < p


def permutations(
    n: int,
    k: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` independent random permutations of ``range(k)``, as an (n, k) int64 tensor."""
    return rand((n, k), device, generator).argsort(dim=1)
