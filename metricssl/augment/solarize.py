"""Random solarization: invert the pixels at or above a threshold."""

from __future__ import annotations

import torch

from metricssl.augment import random as rnd
from metricssl.augment.base import RandomTransform, per_sample
from metricssl.core.validation import check_number


class RandomSolarize(RandomTransform):
    """Replaces every pixel ``x >= threshold`` by ``1 - x``, per sample with probability ``p``.

    Args:
        threshold: in [0, 1] (the float-image scale; 0.5 corresponds to 128 for uint8).
            Pixels at or above it are inverted, as in torchvision's ``solarize``.
        p: probability that a sample is solarized.

    Used in the second view of BYOL (Grill et al., "Bootstrap your own latent: a new approach
    to self-supervised learning", NeurIPS 2020).

    Example:
        >>> import torch
        >>> x = torch.tensor([0.25, 0.5, 0.75]).view(1, 1, 1, 3)
        >>> RandomSolarize(threshold=0.5, p=1.0)(x).flatten().tolist()
        [0.25, 0.5, 0.25]
    """

    def __init__(self, threshold: float = 0.5, p: float = 0.5) -> None:
        super().__init__(p)
        check_number("threshold", threshold, low=0.0, high=1.0)
        self.threshold = float(threshold)

    def apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.p == 0.0:
            return images
        on = rnd.coin(images.shape[0], self.p, images.device, generator)
        invert = per_sample(on) & (images >= self.threshold)
        return torch.where(invert, 1.0 - images, images)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, p={self.p}"
