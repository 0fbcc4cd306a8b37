"""Denoising auto-encoder: learn features by rebuilding clean images from corrupted ones."""

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


def pixel_masks(
    n: int,
    height: int,
    width: int,
    fraction: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bool ``(n, 1, height, width)`` masks, each with exactly ``round(fraction * height *
    width)`` pixels set, chosen uniformly at random per image (Vincent et al.'s masking noise
    destroys a fixed number of input components). One ``argsort`` for the whole batch.

    Example:
        >>> import torch
        >>> m = pixel_masks(2, 4, 4, 0.25, generator=torch.Generator().manual_seed(0))
        >>> m.sum(dim=(1, 2, 3)).tolist()
        [4, 4]
    """
    check_number("fraction", fraction, low=0, high=1, high_inclusive=False)
    k = round(fraction * height * width)
    mask = torch.zeros(n, height * width, dtype=torch.bool, device=device)
    if k:
        # The first k of a random permutation per row: exactly k distinct pixels.
        chosen = rnd.permutations(n, height * width, torch.device(device), generator)[:, :k]
        mask.scatter_(1, chosen, True)
    return mask.view(n, 1, height, width)


@dataclass(frozen=True)
class DenoisingAutoencoderConfig(MethodConfig):
    """The denoising autoencoder's hyper-parameters: the corruption and the decoder.

    Example:
        >>> from metricssl.ssl.denoising_autoencoder import DenoisingAutoencoderConfig
        >>> DenoisingAutoencoderConfig().decoder_width
        16
    """

    masking_fraction: float = param(0.25, low=0, high=1, high_inclusive=False)
    noise_std: float = param(0.0, low=0)
    mask_value: float = param(0.0)
    decoder_width: int = param(16, low=1, integer=True)


class DenoisingAutoencoder(SSLMethod):
    """Denoising auto-encoder: corrupt each image, rebuild the clean one from its features.

    Vincent, Larochelle, Bengio and Manzagol, "Extracting and Composing Robust Features with
    Denoising Autoencoders", ICML 2008. The corruption is the paper's masking noise, a fixed
    share ``masking_fraction`` of the pixels (all channels of each) set to ``mask_value`` at
    random positions per image, and/or additive isotropic Gaussian noise of standard
    deviation ``noise_std`` (Vincent et al., JMLR 2010); either may be 0, not both. The
    backbone sees the corrupted image, the decoder maps its features back to an image, and the
    loss is the mean squared error to the clean view over all pixels (the paper's squared
    error for real-valued inputs).

    Images, noise and ``mask_value`` live in the space the recipe produces: normalised floats
    when it normalises, where ``mask_value=0`` is the dataset mean and ``noise_std=0.5`` is half
    the data's standard deviation; [0, 1] floats otherwise (``mask_value=0``: black, as in the
    paper).

    Logged: ``destroyed_mse``, the squared error on the masked pixels alone (0 without
    masking noise), which says how much the decoder fills in rather than copies.

    Args:
        backbone: images -> features.
        decoder_head: features -> images; None builds a
            :class:`~metricssl.models.decoder.ConvDecoder` of width ``decoder_width`` from
            ``feature_dim`` (inferred from the backbone when None) and ``input_shape``.
        masking_fraction: share of pixels destroyed per image, in [0, 1).
        noise_std: standard deviation of the additive Gaussian noise, >= 0.
        mask_value: the value destroyed pixels get.
        decoder_width: channels of the built decoder's last stage.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.denoising_autoencoder import DenoisingAutoencoder
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = DenoisingAutoencoder(backbone, feature_dim=32, input_shape=(1, 8, 8),
        ...                               noise_std=0.2, decoder_width=8)
        >>> out = method.training_step(Batch([torch.randn(4, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> sorted(out)
        ['destroyed_mse', 'loss']
    """

    name = "denoising_autoencoder"
    num_views = 1
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        decoder_head: nn.Module | None = None,
        masking_fraction: float = DenoisingAutoencoderConfig.masking_fraction,
        noise_std: float = DenoisingAutoencoderConfig.noise_std,
        mask_value: float = DenoisingAutoencoderConfig.mask_value,
        decoder_width: int = DenoisingAutoencoderConfig.decoder_width,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        DenoisingAutoencoderConfig.check(
            masking_fraction=masking_fraction, noise_std=noise_std, mask_value=mask_value
        )
        if not math.isfinite(noise_std) or not math.isfinite(mask_value):
            raise ValueError("noise_std and mask_value must be finite")
        if masking_fraction == 0 and noise_std == 0:
            raise ValueError(
                "masking_fraction and noise_std are both 0: there is no noise to remove; "
                "give one of them a positive value"
            )
        width = backbone_width(backbone, feature_dim, input_shape)
        self.decoder_head = build_decoder(
            type(self).__name__, decoder_head, width, input_shape, decoder_width
        )
        self.masking_fraction = float(masking_fraction)
        self.noise_std = float(noise_std)
        self.mask_value = float(mask_value)

    def corrupt(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(corrupted images, mask of destroyed pixels)``: Gaussian noise added everywhere,
        then the masked pixels set to ``mask_value``. Without a ``generator`` the draws come
        from torch's default generator of the images' device (which the Trainer
        checkpoints)."""
        n, _, h, w = images.shape
        noisy = images
        if self.noise_std > 0:
            draw_on = generator.device if generator is not None else images.device
            noise = torch.randn(images.shape, generator=generator, device=draw_on)
            noisy = images + self.noise_std * noise.to(images.device, images.dtype)
        mask = pixel_masks(n, h, w, self.masking_fraction, images.device, generator)
        if self.masking_fraction > 0:
            noisy = noisy.masked_fill(mask, self.mask_value)
        return noisy, mask

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        target = batch.views[0]
        corrupted, mask = self.corrupt(target)
        prediction = self.decoder_head(self.backbone(corrupted))
        check_reconstruction(prediction, target)
        with torch.autocast(device_type=target.device.type, enabled=False):
            error = (prediction.float() - target.float()).square()
            loss = error.mean()
            weight = mask.expand_as(error)
            destroyed = (error * weight).sum() / weight.sum().clamp(min=1)
        return {"loss": loss, "destroyed_mse": destroyed.detach()}
