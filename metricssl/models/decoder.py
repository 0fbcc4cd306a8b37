"""ConvDecoder: a small convolutional decoder from a feature vector back to an image."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_number


def check_image_shape(name: str, shape) -> tuple[int, int, int]:
    """``shape`` as a ``(C, H, W)`` tuple of positive ints, or a ValueError naming ``name``."""
    if not isinstance(shape, Sequence) or isinstance(shape, str) or len(shape) != 3:
        raise ValueError(f"{name} must be (C, H, W), got {shape!r}")
    for i, s in enumerate(shape):
        check_number(f"{name}[{i}]", s, low=1, integer=True)
    return tuple(int(s) for s in shape)


class ConvDecoder(nn.Module):
    """Features ``(N, F)`` -> images ``(N, C, H, W)``: a linear map to a small grid, then
    upsampling stages, then an interpolation to exactly ``(H, W)``.

    The grid starts ``2**k`` times smaller than the image, with ``k`` chosen so that it is
    about 4 to 7 pixels on its smaller side (28 px: a 7x7 grid and two stages; 8 px: 4x4 and
    one stage; 32 px: 4x4 and three stages; below 8 px: no stage). Each stage is a nearest
    neighbour 2x upsampling followed by ``3x3 conv -> BatchNorm -> ReLU`` (upsampling then
    convolving avoids the checkerboard artefacts of strided transposed convolutions); the
    channels halve at each stage down to ``width`` (starting at ``width * 2**min(k, 2)``). A
    last 3x3 convolution maps to ``C`` channels with no activation, so the output can match
    normalised images (any real values); a bilinear interpolation then gives exactly
    ``(H, W)`` when the stages overshoot it (30 px: 8 -> 16 -> 32 -> 30), so any size works.

    Args:
        in_features: width ``F`` of the input features (the backbone's ``num_features``, or
            a latent code's size).
        output_shape: ``(C, H, W)`` of the images to produce.
        width: channels of the last stage; earlier stages have 2x and 4x as many.

    Example:
        >>> import torch
        >>> from metricssl.models.decoder import ConvDecoder
        >>> decoder = ConvDecoder(512, (1, 28, 28))
        >>> decoder(torch.randn(4, 512)).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(self, in_features: int, output_shape: Sequence[int], width: int = 32):
        super().__init__()
        check_number("in_features", in_features, low=1, integer=True)
        output_shape = check_image_shape("output_shape", output_shape)
        check_number("width", width, low=1, integer=True)
        self.in_features = int(in_features)
        self.output_shape = output_shape
        self.width = int(width)
        _, height, w = output_shape
        # The most 2x stages that keep the starting grid at least 4 pixels on its smaller side.
        self.num_stages = max(0, (min(height, w) // 4).bit_length() - 1)
        scale = 2**self.num_stages
        self.grid_size = (math.ceil(height / scale), math.ceil(w / scale))
        channels = [width * 2 ** min(self.num_stages - i, 2) for i in range(self.num_stages + 1)]
        self.grid_channels = channels[0]
        gh, gw = self.grid_size
        # The BatchNorm after the reshape shifts, so the linear map needs no bias.
        self.project = nn.Linear(in_features, channels[0] * gh * gw, bias=False)
        self.project_norm = nn.BatchNorm2d(channels[0])
        stages: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            stages += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.stages = nn.Sequential(*stages)
        self.to_image = nn.Conv2d(channels[-1], output_shape[0], 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.to_image:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(
                f"ConvDecoder expects features of shape (N, {self.in_features}), "
                f"got {tuple(features.shape)}"
            )
        gh, gw = self.grid_size
        x = self.project(features).view(-1, self.grid_channels, gh, gw)
        x = self.to_image(self.stages(F.relu(self.project_norm(x))))
        size = self.output_shape[1:]
        if tuple(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, output_shape={self.output_shape}, "
            f"grid_size={self.grid_size}, num_stages={self.num_stages}"
        )
