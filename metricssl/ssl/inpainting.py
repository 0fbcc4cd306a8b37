"""Context encoder: learn features by filling in a hidden square of each image (inpainting)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..augment import random as rnd
from ..core.validation import check_number
from .method import Batch, MethodConfig, SSLMethod, param
from .reconstruction import backbone_width, build_decoder, check_reconstruction


def square_masks(
    n: int,
    height: int,
    width: int,
    fraction: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One random axis-aligned square per image, as a bool ``(n, 1, height, width)`` mask.

    The box has sides ``round(sqrt(fraction) * height)`` by ``round(sqrt(fraction) * width)``
    (at least 1 pixel), so it covers ``fraction`` of the image up to rounding (a square on a
    square image), and lies wholly inside the image at a position drawn uniformly and
    independently per image. Drawn for the whole batch at once, without a per-image loop.

    Example:
        >>> import torch
        >>> m = square_masks(3, 8, 8, 0.25, generator=torch.Generator().manual_seed(0))
        >>> m.shape, m.sum(dim=(1, 2, 3)).tolist()
        (torch.Size([3, 1, 8, 8]), [16, 16, 16])
    """
    check_number("fraction", fraction, low=0, high=1, low_inclusive=False, high_inclusive=False)
    side = math.sqrt(fraction)
    box_h = min(height, max(1, round(side * height)))
    box_w = min(width, max(1, round(side * width)))
    u = rnd.rand((2, n), torch.device(device), generator)
    top = (u[0] * (height - box_h + 1)).floor().long().clamp_(max=height - box_h)
    left = (u[1] * (width - box_w + 1)).floor().long().clamp_(max=width - box_w)
    rows = torch.arange(height, device=top.device).view(1, height, 1)
    cols = torch.arange(width, device=top.device).view(1, 1, width)
    top, left = top.view(n, 1, 1), left.view(n, 1, 1)
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    return inside.unsqueeze(1)


def masked_squared_errors(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error inside and outside ``mask``: ``(masked_mse, context_mse)``.

    ``prediction`` and ``target`` are ``(N, C, H, W)``; ``mask`` is bool ``(N, 1, H, W)`` (the
    same region in every channel) or ``(N, C, H, W)``. Each mean is over the pixels (and
    channels) of its region in the whole batch; an empty region gives 0.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction has shape {tuple(prediction.shape)} but target has {tuple(target.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if prediction.ndim != 4:
        raise ValueError(f"prediction must be (N, C, H, W), got shape {tuple(prediction.shape)}")
    n, c, h, w = prediction.shape
    expected = [(n, 1, h, w), (n, c, h, w)]
    if tuple(mask.shape) not in expected:
        raise ValueError(f"mask must have shape ({n}, 1 or {c}, {h}, {w}), got {tuple(mask.shape)}")
    error = (prediction - target).square()
    weight = mask.to(error.dtype).expand_as(error)
    inside = weight.sum()
    masked = (error * weight).sum() / inside.clamp(min=1)
    context = (error * (1 - weight)).sum() / (error.numel() - inside).clamp(min=1)
    return masked, context


class MaskedReconstructionLoss(nn.Module):
    """The context encoder's reconstruction loss: ``masked_mse + context_weight *
    context_mse`` (see :func:`masked_squared_errors`).

    With ``context_weight=0`` only the hidden region counts; a small positive weight also
    asks for the visible pixels, as Pathak et al. ask for a band of visible pixels around
    the hole (their "overlap").

    Args:
        context_weight: weight of the error on the pixels outside the mask, >= 0.

    Example:
        >>> import torch
        >>> loss = MaskedReconstructionLoss()
        >>> mask = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
        >>> mask[0, 0, 0, 0] = True
        >>> loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), mask).item()
        1.0
    """

    def __init__(self, context_weight: float = 0.0):
        super().__init__()
        check_number("context_weight", context_weight, low=0)
        self.context_weight = float(context_weight)

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        masked, context = masked_squared_errors(prediction, target, mask)
        return masked + self.context_weight * context if self.context_weight else masked


def _check_finite(name: str, value) -> None:
    check_number(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


@dataclass(frozen=True)
class ContextEncoderConfig(MethodConfig):
    """The context encoder's hyper-parameters: the masked region and the decoder.

    Example:
        >>> from metricssl.ssl.inpainting import ContextEncoderConfig
        >>> ContextEncoderConfig().decoder_width
        16
    """

    mask_fraction: float = param(0.25, low=0, high=1, low_inclusive=False, high_inclusive=False)
    context_weight: float = param(0.0, low=0)
    fill_value: float = param(0.0, check=_check_finite)
    decoder_width: int = param(16, low=1, integer=True)


class ContextEncoder(SSLMethod):
    """Context encoder: hide a random square of each image, rebuild it from the rest.

    Pathak, Krähenbühl, Donahue, Darrell and Efros, "Context Encoders: Feature Learning by
    Inpainting", CVPR 2016. In each training view a square covering ``mask_fraction`` of the
    image (the paper's random blocks hide about a quarter of it), at a random position per
    image, is replaced by ``fill_value``; the backbone sees the masked image, the decoder maps
    its features back to a whole image, and the loss is the mean squared error over the
    hidden pixels (:class:`MaskedReconstructionLoss`), plus ``context_weight`` times the error
    over the visible ones. The paper's adversarial loss (a discriminator that makes the
    filled-in pixels sharper) is left out: the encoder learns from the reconstruction loss
    alone.

    The target is the clean view in the space the recipe produces (normalised floats when
    the recipe normalises); ``fill_value=0`` is then the dataset mean, the paper's fill.
    Logged: ``masked_mse`` and ``context_mse``, the errors inside and outside the square.

    Args:
        backbone: images -> features.
        decoder_head: features -> images of the view's shape; None builds a
            :class:`~metricssl.models.decoder.ConvDecoder` of width ``decoder_width`` from
            ``feature_dim`` (inferred from the backbone when None) and ``input_shape``.
        mask_fraction: the hidden square's share of the image area, in (0, 1).
        context_weight: weight of the error outside the mask, >= 0 (0: hidden region only).
        fill_value: what the hidden pixels are set to, in the view's space.
        decoder_width: channels of the built decoder's last stage.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.inpainting import ContextEncoder
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = ContextEncoder(backbone, feature_dim=32, input_shape=(1, 8, 8),
        ...                         decoder_width=8)
        >>> out = method.training_step(Batch([torch.randn(4, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> sorted(out)
        ['context_mse', 'loss', 'masked_mse']
    """

    name = "context_encoder"
    num_views = 1
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        decoder_head: nn.Module | None = None,
        mask_fraction: float = ContextEncoderConfig.mask_fraction,
        context_weight: float = ContextEncoderConfig.context_weight,
        fill_value: float = ContextEncoderConfig.fill_value,
        decoder_width: int = ContextEncoderConfig.decoder_width,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        ContextEncoderConfig.check(
            mask_fraction=mask_fraction, fill_value=fill_value, context_weight=context_weight
        )
        width = backbone_width(backbone, feature_dim, input_shape)
        self.decoder_head = build_decoder(
            type(self).__name__, decoder_head, width, input_shape, decoder_width
        )
        self.mask_fraction = float(mask_fraction)
        self.context_weight = float(context_weight)
        self.fill_value = float(fill_value)

    def corrupt(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked images, mask)``: each image with its random square set to
        ``fill_value``, and the bool ``(N, 1, H, W)`` mask of the hidden pixels. Without a
        ``generator`` the positions come from torch's default generator of the images'
        device (which the Trainer checkpoints)."""
        n, _, h, w = images.shape
        mask = square_masks(n, h, w, self.mask_fraction, images.device, generator)
        return images.masked_fill(mask, self.fill_value), mask

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        target = batch.views[0]
        masked, mask = self.corrupt(target)
        prediction = self.decoder_head(self.backbone(masked))
        check_reconstruction(prediction, target)
        # The squared errors in float32, also under autocast.
        with torch.autocast(device_type=target.device.type, enabled=False):
            masked_mse, context_mse = masked_squared_errors(
                prediction.float(), target.float(), mask
            )
            loss = masked_mse + self.context_weight * context_mse
        return {
            "loss": loss,
            "masked_mse": masked_mse.detach(),
            "context_mse": context_mse.detach(),
        }
