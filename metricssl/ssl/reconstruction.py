"""What the reconstruction pretext methods share: their light recipe, heads and decoder.

The context encoder (:mod:`metricssl.ssl.inpainting`), the denoising auto-encoder
(:mod:`metricssl.ssl.denoising_autoencoder`) and the VAE (:mod:`metricssl.ssl.vae`) learn by
rebuilding an image from the backbone's features. They train on one lightly augmented view
per image and reconstruct that view itself, in the space the view is in: the normalised
floats the recipe ends with (``(x - mean) / std`` when ``mean``/``std`` are given, [0, 1]
otherwise). The decoder (:class:`~metricssl.models.decoder.ConvDecoder`) has a linear output,
so it can produce any value there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..augment.compose import MultiView
from ..augment.recipes import light_view
from ..core.validation import check_module, check_number
from ..models.decoder import ConvDecoder, check_image_shape
from ..models.embedder import infer_num_features


def reconstruction_views(
    image_size,
    *,
    crop_scale: tuple[float, float] = (0.8, 1.0),
    flip_p: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **options,
) -> MultiView:
    """One lightly augmented view per image: a random resized crop of 80-100% of the area,
    a horizontal flip with p = 0.5, then the normalisation. No colour jitter, grayscale or
    blur by default (``options`` may turn them on: they are
    :func:`~metricssl.augment.augmentation_view`'s arguments).

    A reconstruction method gains nothing from strong augmentation: it needs no invariance
    between two views, only some variety so that the decoder does not memorise the images.

    Example:
        >>> import torch
        >>> from metricssl.ssl.reconstruction import reconstruction_views
        >>> views = reconstruction_views(28, mean=[0.5], std=[0.3])(
        ...     torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
        >>> len(views), tuple(views[0].shape)
        (1, (4, 1, 28, 28))
    """
    return light_view(image_size, crop_scale, flip_p, mean, std, **options)


def reconstruction_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """No heads from the registry: a reconstruction method builds its own decoder.

    The decoder must produce images of the training shape, which a heads builder is not
    told; the method knows it (``input_shape``) and builds a
    :class:`~metricssl.models.decoder.ConvDecoder` of width ``decoder_width`` itself unless a
    ``decoder_head`` is passed.
    """
    return {}


def build_decoder(
    owner: str,
    decoder_head: nn.Module | None,
    in_features: int | None,
    input_shape: Sequence[int] | None,
    width: int,
) -> nn.Module:
    """``decoder_head`` when given, else a :class:`ConvDecoder` from ``in_features`` to
    ``input_shape`` (both then required)."""
    check_number("decoder_width", width, low=1, integer=True)
    if decoder_head is not None:
        check_module("decoder_head", decoder_head, allow_none=True)
        return decoder_head
    if input_shape is None or in_features is None:
        raise ValueError(
            f"{owner} needs input_shape (and feature_dim, or a backbone whose width can be "
            "inferred) to build its decoder; or pass decoder_head"
        )
    return ConvDecoder(in_features, check_image_shape("input_shape", input_shape), width)


def backbone_width(
    backbone: nn.Module, feature_dim: int | None, input_shape: Sequence[int] | None
) -> int | None:
    """``feature_dim`` when given, else the backbone's width inferred for ``input_shape``."""
    if feature_dim is not None or input_shape is None:
        return feature_dim
    return infer_num_features(backbone, tuple(int(s) for s in input_shape))


def check_reconstruction(prediction: torch.Tensor, target: torch.Tensor) -> None:
    """The decoder must give images of the view's shape."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"the decoder gives images of shape {tuple(prediction.shape)} but the views have "
            f"shape {tuple(target.shape)}"
        )
