"""Random horizontal flip of a batch, one coin per sample."""

from __future__ import annotations

import torch

from metricssl.augment import random as rnd
from metricssl.augment.base import RandomTransform, per_sample


class RandomHorizontalFlip(RandomTransform):
    """Mirrors each image left-right with probability ``p``.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).view(1, 1, 1, 4) / 3
        >>> RandomHorizontalFlip(p=1.0)(x).flatten().tolist() == x.flatten().flip(0).tolist()
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.p == 0.0:
            return images
        flip = rnd.coin(images.shape[0], self.p, images.device, generator)
        return torch.where(per_sample(flip), images.flip(3), images)
