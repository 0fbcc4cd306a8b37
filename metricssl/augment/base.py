"""The base class of the random augmentations: a probability ``p`` and a seeded forward."""

from __future__ import annotations

from collections.abc import Callable

import torch

from metricssl.augment.checks import check_probability
from metricssl.augment.convert import to_float_images


class RandomTransform(torch.nn.Module):
    """An augmentation applied to each sample of a batch independently with probability ``p``.

    Subclasses implement ``apply(images, generator)`` on float images in [0, 1]; ``forward``
    checks the batch and converts uint8 to float first, so every transform can be used alone
    or inside a :class:`~metricssl.augment.compose.Compose`.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability("p", p)

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.apply(to_float_images(images), generator)

    def apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"p={self.p}"


def per_sample(mask: torch.Tensor) -> torch.Tensor:
    """A (N,) mask or factor reshaped to broadcast over (N, C, H, W)."""
    return mask.view(-1, 1, 1, 1)


def apply_where(
    images: torch.Tensor,
    mask: torch.Tensor,
    fn: Callable[..., torch.Tensor],
    *per_sample_args: torch.Tensor,
    inplace: bool = False,
) -> torch.Tensor:
    """``fn(images, *per_sample_args)`` for the samples where ``mask`` is True, the others
    unchanged; ``fn`` works sample by sample (its output for one sample depends only on that
    sample and its arguments).

    On CUDA, ``fn`` runs on the whole batch and ``torch.where`` picks: selecting the samples
    would need their count on the host, a synchronisation. On the CPU, where a selection is
    free and compute is scarce, ``fn`` runs on the selected samples only. Both give the same
    values. With ``inplace=True`` the CPU path writes into ``images`` instead of a copy.
    """
    if not _select_samples(images):
        return torch.where(per_sample(mask), fn(images, *per_sample_args), images)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return images
    if idx.numel() == images.shape[0]:
        return fn(images, *per_sample_args)
    out = images if inplace else images.clone()
    out[idx] = fn(images[idx], *(a[idx] for a in per_sample_args))
    return out


def _select_samples(images: torch.Tensor) -> bool:
    """Whether :func:`apply_where` indexes the selected samples (CPU) or masks (devices)."""
    return images.device.type == "cpu"
