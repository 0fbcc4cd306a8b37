"""Argument and input checks shared by the augmentations.

Each message names the argument, so a bad recipe fails when it is built, not deep inside
``grid_sample`` at the first batch.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from metricssl.core.validation import check_number


def check_probability(name: str, p) -> float:
    """``p`` must be a number in [0, 1]; returns it as a float."""
    check_number(name, p, low=0.0, high=1.0)
    return float(p)


def check_probabilities(name: str, p, n: int) -> tuple[float, ...]:
    """One probability per view: a number (shared by all ``n`` views) or a sequence of ``n``."""
    if isinstance(p, numbers.Real) and not isinstance(p, bool):
        return (check_probability(name, p),) * n
    if not isinstance(p, Sequence) or isinstance(p, str) or len(p) != n:
        raise TypeError(
            f"{name} must be a probability or a sequence of {n} probabilities, got {p!r}"
        )
    return tuple(check_probability(f"{name}[{i}]", v) for i, v in enumerate(p))


def check_range(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> tuple[float, float]:
    """An ordered pair ``(a, b)`` with ``a <= b``, both inside the given bounds."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (min, max), got {value!r}")
    for i, v in enumerate(value):
        check_number(
            f"{name}[{i}]",
            v,
            low=low,
            high=high,
            low_inclusive=low_inclusive,
            high_inclusive=high_inclusive,
        )
    a, b = float(value[0]), float(value[1])
    if a > b:
        raise ValueError(f"{name} must be ordered (min <= max), got {tuple(value)}")
    return a, b


def check_size(name: str, size) -> tuple[int, int]:
    """An image size: a positive int (square) or a pair of positive ints ``(height, width)``."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        check_number(name, size, low=1, integer=True)
        return int(size), int(size)
    if not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2:
        raise TypeError(f"{name} must be an int or a pair (height, width) of ints, got {size!r}")
    for i, v in enumerate(size):
        check_number(f"{name}[{i}]", v, low=1, integer=True)
    return int(size[0]), int(size[1])


def check_images(images, name: str = "images") -> None:
    """A batch of images: a 4D (N, C, H, W) uint8 or floating-point tensor with N >= 1."""
    if not torch.is_tensor(images):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(
            f"{name} must be a 4D tensor of shape (batch, channels, height, width), "
            f"got shape {tuple(images.shape)}"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 or floating point, got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty: a batch needs at least one image")
    if images.shape[1] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has an empty channel or spatial dimension: {tuple(images.shape)}")


def check_color_channels(images: torch.Tensor, what: str) -> int:
    """Colour operations know grayscale (1 channel) and RGB (3 channels) only."""
    c = images.shape[1]
    if c not in (1, 3):
        raise ValueError(f"{what} needs 1 (grayscale) or 3 (RGB) channels, got {c}")
    return c
