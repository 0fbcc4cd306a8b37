"""uint8 -> float conversion: the one place where images enter the [0, 1] float range."""

from __future__ import annotations

import torch

from metricssl.augment.checks import check_images


def to_float_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Checks a batch and returns it as floats in [0, 1] on the same device.

    uint8 images are divided by 255 into float32. Floating-point images are returned as they
    are (same dtype, no copy) and are taken to be in [0, 1] already: checking the range would
    cost a reduction and, on CUDA, a host synchronisation per call.
    """
    check_images(images, name)
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images


class ToFloat(torch.nn.Module):
    """uint8 (N, C, H, W) -> float32 in [0, 1]; floating-point input passes through.

    Example:
        >>> import torch
        >>> ToFloat()(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
        1.0
    """

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        return to_float_images(images)
