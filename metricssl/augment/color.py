"""Colour augmentations of a batch: colour jitter and random grayscale.

Grayscale (1-channel) images have no colour: saturation and hue jitter are no-ops on them
and random grayscale returns them unchanged. Brightness and contrast work on any image.
"""

from __future__ import annotations

import numbers
from functools import partial

import torch

from metricssl.augment import base
from metricssl.augment import random as rnd
from metricssl.augment.base import RandomTransform, apply_where, per_sample
from metricssl.augment.checks import check_color_channels, check_range
from metricssl.core.validation import check_number

# ITU-R BT.601 luma, the weights of torchvision's and PIL's "L" conversion.
_LUMA = (0.299, 0.587, 0.114)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma; a 1-channel batch is returned as it is."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates the hue of each RGB image by its (N,) ``shift``, in turns, keeping HSV
    saturation and value: torchvision's ``adjust_hue``.

    Done without building the HSV image: with ``max``, ``min`` and ``delta = max - min`` of a
    pixel and its hue ``h6`` in sextants [0, 6), the rotated pixel's channel ``n`` (5, 3, 1
    for red, green, blue) is ``max - delta * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + h6 + 6 * shift) mod 6`` (the usual HSV -> RGB formula, as ``value * saturation
    = delta``). Gray pixels (``delta = 0``) stay as they are.
    """
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    maxc = images.amax(dim=1, keepdim=True)
    delta = maxc - images.amin(dim=1, keepdim=True)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    # The largest channel picks the 60-degree sector; ties go to red, then green.
    h6 = torch.where(
        maxc == r,
        (g - b) / safe,
        torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    h6 = h6 + 6.0 * per_sample(shift)
    n = torch.tensor((5.0, 3.0, 1.0), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    k = torch.remainder(h6 + n, 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc - delta * ramp


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scales each image by its (N,) ``factor``, clamped to [0, 1]."""
    return (images * per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blends each image with the mean of its grayscale: ``f * x + (1 - f) * mean``."""
    f = per_sample(factor)
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return (f * images + (1.0 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blends each image with its grayscale: ``f * x + (1 - f) * gray``."""
    f = per_sample(factor)
    return (f * images + (1.0 - f) * rgb_to_grayscale(images)).clamp_(0.0, 1.0)


def _factor_range(name: str, value) -> tuple[float, float] | None:
    """torchvision's convention: ``v`` means factors in [max(0, 1 - v), 1 + v]; a pair is
    the range itself. None when the range is the identity {1}."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        check_number(name, value, low=0.0)
        lo, hi = max(0.0, 1.0 - float(value)), 1.0 + float(value)
    else:
        lo, hi = check_range(name, value, low=0.0)
    return None if lo == hi == 1.0 else (lo, hi)


def _hue_range(value) -> tuple[float, float] | None:
    """``h`` in [0, 0.5] means shifts in [-h, h] turns; a pair must lie in [-0.5, 0.5]."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        check_number("hue", value, low=0.0, high=0.5)
        lo, hi = -float(value), float(value)
    else:
        lo, hi = check_range("hue", value, low=-0.5, high=0.5)
    return None if lo == hi == 0.0 else (lo, hi)


class ColorJitter(RandomTransform):
    """Random brightness, contrast, saturation and hue, each sample with its own factors and
    its own random order of the four adjustments (as torchvision's ``ColorJitter`` applied
    image by image).

    Args:
        brightness: ``b >= 0`` draws a factor in [max(0, 1 - b), 1 + b] (a pair gives the
            range); the image is multiplied by it.
        contrast: same convention; the image is blended with the mean of its grayscale.
        saturation: same convention; the image is blended with its grayscale. A no-op on
            1-channel images.
        hue: ``h`` in [0, 0.5] draws a hue rotation in [-h, h] turns (a pair in [-0.5, 0.5]
            gives the range), done in HSV. A no-op on 1-channel images.
        p: probability that a sample is jittered at all (``RandomApply(ColorJitter, p)``).

    Every adjustment clamps to [0, 1], as torchvision's does, so the order matters. The batch
    goes through as many stages as there are adjustments; at each stage every jittered sample
    applies the adjustment its own permutation puts there. On the CPU, where selecting
    samples is free and arithmetic is what costs, each adjustment runs on exactly the
    samples that apply it at that stage (see :func:`~metricssl.augment.base.apply_where`).
    On a device, where every selection would be a synchronisation and every op a launch,
    brightness, contrast and saturation are one formula, ``clamp(f * x + (1 - f) * base)``
    with ``base`` 0, the mean of the grayscale image or the grayscale image, evaluated once
    per stage for the whole batch with per-sample ``f`` and ``base``, and hue once per stage:
    8 passes over the batch (~275 tensor ops for the four adjustments) instead of one per
    (stage, adjustment) pair (16 passes, ~350 ops). Both give the same values.

    The jitter of SimCLR (Chen et al., "A simple framework for contrastive learning of visual
    representations", ICML 2020).

    Example:
        >>> import torch
        >>> jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
        >>> jitter(torch.rand(8, 3, 32, 32)).shape
        torch.Size([8, 3, 32, 32])
    """

    def __init__(
        self,
        brightness: float | tuple[float, float] = 0.0,
        contrast: float | tuple[float, float] = 0.0,
        saturation: float | tuple[float, float] = 0.0,
        hue: float | tuple[float, float] = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.brightness = _factor_range("brightness", brightness)
        self.contrast = _factor_range("contrast", contrast)
        self.saturation = _factor_range("saturation", saturation)
        self.hue = _hue_range(hue)

    def apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        c = check_color_channels(images, "ColorJitter")
        ranges = {"brightness": self.brightness, "contrast": self.contrast}
        if c == 3:
            ranges.update(saturation=self.saturation, hue=self.hue)
        ops = [name for name, r in ranges.items() if r is not None]
        if self.p == 0.0 or not ops:
            return images

        # The draws, in this order, are the random sequence of a seed: keep them as they are.
        n, device = images.shape[0], images.device
        on = rnd.coin(n, self.p, device, generator)
        factors = [rnd.uniform(n, *ranges[name], device, generator) for name in ops]
        factors = [f.to(images.dtype) for f in factors]
        order = rnd.permutations(n, len(ops), device, generator)
        images = images.clone()  # every stage writes into this copy, not the caller's tensor
        if base._select_samples(images):
            for k in range(len(ops)):
                for j, name in enumerate(ops):
                    sel = on & (order[:, k] == j)
                    images = apply_where(images, sel, _ADJUST[name], factors[j], inplace=True)
            return images

        # Row k of each (stages, N) table: what every sample does at stage k. Built on the
        # device from the draws (a table made on the host would need a synchronising copy).
        op_at = order.T
        factor_at = torch.stack(factors).gather(0, op_at)

        def does(name: str) -> torch.Tensor:
            return op_at == (ops.index(name) if name in ops else -1)

        to_mean, to_gray, hue_at = does("contrast"), does("saturation"), does("hue")
        blend_at, hue_at = on & ~hue_at, on & hue_at
        blend = partial(_blend, mean="contrast" in ops, gray="saturation" in ops)
        for k in range(len(ops)):
            if ops != ["hue"]:
                images = apply_where(
                    images, blend_at[k], blend, factor_at[k], to_mean[k], to_gray[k], inplace=True
                )
            if "hue" in ops:
                images = apply_where(images, hue_at[k], shift_hue, factor_at[k], inplace=True)
        return images

    def extra_repr(self) -> str:
        return (
            f"brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, p={self.p}"
        )


_ADJUST = {
    "brightness": adjust_brightness,
    "contrast": adjust_contrast,
    "saturation": adjust_saturation,
    "hue": shift_hue,
}


def _blend(
    images: torch.Tensor,
    factor: torch.Tensor,
    to_mean: torch.Tensor,
    to_gray: torch.Tensor,
    *,
    mean: bool,
    gray: bool,
) -> torch.Tensor:
    """Brightness, contrast and saturation as one formula with per-sample arguments:
    ``clamp(f * x + (1 - f) * base)``, with ``base`` the grayscale image where ``to_gray``
    (saturation), the mean of the grayscale image where ``to_mean`` (contrast), else 0
    (brightness). Term for term the formulas of :func:`adjust_saturation`,
    :func:`adjust_contrast` and :func:`adjust_brightness`, so the values are theirs.
    ``mean``/``gray`` say whether any sample may need that base (else it is not computed)."""
    f = per_sample(factor)
    base = images.new_zeros(())
    if mean or gray:
        luma = rgb_to_grayscale(images)
        if mean:
            base = torch.where(per_sample(to_mean), luma.mean(dim=(1, 2, 3), keepdim=True), base)
        if gray:
            base = torch.where(per_sample(to_gray), luma, base)
    return (f * images + (1.0 - f) * base).clamp_(0.0, 1.0)


class RandomGrayscale(RandomTransform):
    """Turns each RGB image into grayscale (luma repeated on the 3 channels) with probability
    ``p``. The channel count is kept; 1-channel images are returned unchanged.

    Example:
        >>> import torch
        >>> out = RandomGrayscale(p=1.0)(torch.rand(4, 3, 8, 8))
        >>> bool((out[:, 0] == out[:, 1]).all() and (out[:, 1] == out[:, 2]).all())
        True
    """

    def __init__(self, p: float = 0.1) -> None:
        super().__init__(p)

    def apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        c = check_color_channels(images, "RandomGrayscale")
        if c == 1 or self.p == 0.0:
            return images
        on = rnd.coin(images.shape[0], self.p, images.device, generator)
        gray = rgb_to_grayscale(images).expand_as(images)
        return torch.where(per_sample(on), gray, images)
