"""Random resized crop of a whole batch: one box per sample, resampled in one ``grid_sample``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metricssl.augment import random as rnd
from metricssl.augment.base import RandomTransform
from metricssl.augment.checks import check_range, check_size
from metricssl.core.validation import check_choice

_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample crop boxes ``(top, left, box_height, box_width)``, each an (n,) int64 tensor.

    The rule is torchvision's ``RandomResizedCrop.get_params``, vectorised: each sample makes
    ``attempts`` draws of an area fraction in ``scale`` and a log-uniform aspect ratio in
    ``ratio`` and keeps the first box that fits in the image; a sample whose draws all miss
    falls back to the largest central box whose aspect ratio lies in ``ratio``.
    """
    area = float(height * width)
    target = rnd.rand((n, attempts), device, generator).mul_(scale[1] - scale[0]).add_(scale[0])
    target = target.mul_(area)
    aspect = rnd.log_uniform((n, attempts), ratio[0], ratio[1], device, generator)
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # argmax returns the first maximal entry: the first attempt that fits.
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    w = w.gather(1, first).squeeze(1).long()
    h = h.gather(1, first).squeeze(1).long()

    fb_h, fb_w = _fallback_box(height, width, ratio)
    found = fits.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fb_w))
    h = torch.where(found, h, torch.full_like(h, fb_h))

    # Offsets uniform over the valid integer positions, as randint(0, H - h + 1).
    u = rnd.rand((2, n), device, generator)
    top = (u[0] * (height - h + 1)).floor().long().clamp_(max=height - h)
    left = (u[1] * (width - w + 1)).floor().long().clamp_(max=width - w)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return top, left, h, w


def _fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return round(width / ratio[0]), width
    if in_ratio > ratio[1]:
        return height, round(height * ratio[1])
    return height, width


def crop_and_resize(
    images: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    box_height: torch.Tensor,
    box_width: torch.Tensor,
    size: tuple[int, int],
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Cuts one box per sample out of ``images`` and resizes it to ``size``, in one call.

    Each box is an axis-aligned affine map from the output's normalised coordinates to the
    input's (``align_corners=False``: -1 and 1 are the outer pixel edges), so a box covering
    the whole image at the same size samples exactly the input pixel centres: the identity.
    The map has no rotation, so the sampling grid is built from one row and one column per
    sample (``affine_grid`` would do an (N, H*W, 3) matrix product for the same numbers).
    """
    n, c, height, width = images.shape
    out_h, out_w = size
    dtype, device = images.dtype, images.device
    # Output pixel centres in normalised coordinates.
    base_x = (torch.arange(out_w, device=device, dtype=dtype) * 2 + 1) / out_w - 1
    base_y = (torch.arange(out_h, device=device, dtype=dtype) * 2 + 1) / out_h - 1
    bw = box_width.to(dtype).unsqueeze(1)
    bh = box_height.to(dtype).unsqueeze(1)
    gx = base_x * (bw / width) + ((2 * left.to(dtype).unsqueeze(1) + bw) / width - 1)  # (N, W')
    gy = base_y * (bh / height) + ((2 * top.to(dtype).unsqueeze(1) + bh) / height - 1)  # (N, H')
    grid = images.new_empty(n, out_h, out_w, 2)
    grid[..., 0] = gx.unsqueeze(1)
    grid[..., 1] = gy.unsqueeze(2)
    # Boxes lie inside the image; "border" keeps the half pixel between the outer pixel
    # centres and the image edge from blending with zeros.
    out = F.grid_sample(
        images, grid, mode=interpolation, padding_mode="border", align_corners=False
    )
    if interpolation == "bicubic":
        out = out.clamp_(0.0, 1.0)  # cubic weights overshoot
    return out


class RandomResizedCrop(RandomTransform):
    """Crops a random box of each image and resizes it to ``size`` (per-sample boxes).

    Args:
        size: output size, an int (square) or ``(height, width)``.
        scale: range of the box area as a fraction of the image area, ordered, in (0, 1].
        ratio: range of the box aspect ratio (width / height), ordered, positive; drawn
            log-uniformly.
        interpolation: ``"bilinear"`` (default), ``"bicubic"`` (clamped to [0, 1]) or
            ``"nearest"``. There is no antialiasing: on the small images this targets, crops
            are mostly enlarged, not shrunk.
        p: probability that a sample is cropped; a sample that is not is resized whole.

    The box is drawn as in torchvision (Szegedy et al., "Going deeper with convolutions",
    CVPR 2015; the crop used by SimCLR, MoCo, BYOL, ...), then the whole batch is resampled
    with one ``affine_grid``/``grid_sample`` call on the images' device.

    Example:
        >>> import torch
        >>> crop = RandomResizedCrop(24, scale=(0.2, 1.0))
        >>> crop(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)).shape
        torch.Size([8, 1, 24, 24])
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: str = "bilinear",
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.size = check_size("size", size)
        self.scale = check_range("scale", scale, low=0.0, high=1.0, low_inclusive=False)
        self.ratio = check_range("ratio", ratio, low=0.0, low_inclusive=False)
        check_choice("interpolation", interpolation, _INTERPOLATIONS)
        self.interpolation = interpolation

    def apply(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        n, _, height, width = images.shape
        device = images.device
        top, left, h, w = sample_crop_boxes(
            n, height, width, self.scale, self.ratio, device, generator
        )
        if self.p < 1.0:
            keep = ~rnd.coin(n, self.p, device, generator)
            top = top.masked_fill(keep, 0)
            left = left.masked_fill(keep, 0)
            h = h.masked_fill(keep, height)
            w = w.masked_fill(keep, width)
        return crop_and_resize(images, top, left, h, w, self.size, self.interpolation)

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)}, "
            f"interpolation={self.interpolation!r}, p={self.p}"
        )
