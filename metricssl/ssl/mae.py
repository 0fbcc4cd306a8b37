"""MAE: a masked autoencoder that rebuilds the hidden patches of an image (ViT backbones)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..augment import random as rnd
from ..augment.compose import MultiView
from ..augment.recipes import light_view
from ..core.common import accumulation_dtype
from ..core.validation import ArgumentError
from ..models.vit import TransformerBlock, VisionTransformer, patchify, sincos_position_embedding
from .method import Batch, MethodConfig, SSLMethod, param


def mae_views(
    image_size,
    *,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    flip_p: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **options,
) -> MultiView:
    """MAE's light augmentation, one view per image: a random resized crop of 20-100% of
    the area (the paper's), a horizontal flip with p = 0.5, then the normalisation; no colour
    jitter, grayscale or blur unless ``options`` turn them on. The masking is the hard part
    of the task, so the views need no strong augmentation.

    Example:
        >>> import torch
        >>> views = mae_views(8)(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
        >>> len(views), tuple(views[0].shape)
        (1, (4, 1, 8, 8))
    """
    return light_view(image_size, crop_scale, flip_p, mean, std, **options)


def mae_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """No heads from the registry: MAE builds its decoder from the ViT it is given (its
    width, patch size and channels), which a heads builder is not told."""
    return {}


def mae_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    masked: torch.Tensor,
    norm_pix_loss: bool = True,
) -> torch.Tensor:
    """MAE's reconstruction loss: the mean squared error of the predicted pixels, averaged
    over each patch, then over the masked patches of the whole batch only.

    ``prediction`` and ``target`` are patches ``(N, L, D)`` (see
    :func:`~metricssl.models.vit.patchify`), ``masked`` a bool ``(N, L)`` (True: hidden from
    the encoder). With ``norm_pix_loss`` each target patch is first normalised by its own
    pixels' mean and (unbiased) variance, ``(t - mean) / sqrt(var + 1e-6)``, as in the
    paper's default, which gave it better features.

    Example:
        >>> import torch
        >>> masked = torch.tensor([[True, False]])
        >>> mae_loss(torch.ones(1, 2, 4), torch.zeros(1, 2, 4), masked, norm_pix_loss=False)
        tensor(1.)
    """
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must be "
            "patches of one shape (N, L, D)"
        )
    if masked.dtype != torch.bool or masked.shape != prediction.shape[:2]:
        raise ValueError(
            f"masked must be a bool tensor of shape {tuple(prediction.shape[:2])}, got "
            f"{masked.dtype} {tuple(masked.shape)}"
        )
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (prediction - target).square().mean(dim=-1)
    weight = masked.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum()


class MAEDecoder(nn.Module):
    """MAE's light decoder: the encoded visible tokens are projected to ``width``, a learned
    mask token fills every hidden position, fixed 2-D sine-cosine position embeddings are
    added, ``depth`` transformer blocks and a LayerNorm follow, and a linear layer predicts
    each patch's pixels.

    Args:
        encoder_width: the ViT's token width.
        patch_dim: pixels per patch, ``patch_size ** 2 * channels``.
        width: the decoder's token width (divisible by ``heads`` and by 4).
        depth: transformer blocks.
        heads: attention heads per block.

    Example:
        >>> import torch
        >>> decoder = MAEDecoder(encoder_width=16, patch_dim=4, width=8, depth=1, heads=2)
        >>> restore = torch.tensor([[2, 0, 3, 1]])  # patch j's rank in the shuffled order
        >>> decoder(torch.randn(1, 3, 16), restore, (2, 2)).shape  # class token + 2 visible
        torch.Size([1, 4, 4])
    """

    def __init__(self, encoder_width: int, patch_dim: int, width: int, depth: int, heads: int):
        super().__init__()
        MAEConfig.check(decoder_width=width, decoder_depth=depth, decoder_heads=heads)
        if width % heads:
            raise ArgumentError(f"decoder_width={width} must be divisible by decoder_heads={heads}")
        if width % 4:
            # Half the width encodes the row, half the column, each as sines and cosines.
            raise ArgumentError(f"decoder_width={width} must be divisible by 4")
        self.width = int(width)
        self.embed = nn.Linear(encoder_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.Sequential(*(TransformerBlock(width, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.predict = nn.Linear(width, patch_dim)
        # The reference code's initialisation: as the ViT's (see VisionTransformer).
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(
        self, encoded: torch.Tensor, restore: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """``encoded``: the encoder's ``(N, 1 + K, encoder_width)`` (class token, then the K
        visible patches in shuffled order); ``restore``: ``(N, L)``, each patch's rank in
        that order (patch j is visible when ``restore[:, j] < K``). Returns the predicted
        pixels of every patch, ``(N, L, patch_dim)``, in grid order."""
        x = self.embed(encoded)
        n, length = restore.shape
        hidden = self.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        shuffled = torch.cat([x[:, 1:], hidden], dim=1)
        patches = shuffled.gather(1, restore.unsqueeze(-1).expand(-1, -1, self.width))
        x = torch.cat([x[:, :1], patches], dim=1)
        x = x + sincos_position_embedding(self.width, grid, device=x.device, dtype=x.dtype)
        return self.predict(self.norm(self.blocks(x)))[:, 1:]


@dataclass(frozen=True)
class MAEConfig(MethodConfig):
    """MAE's hyper-parameters: the share of patches hidden, the decoder's size (scaled down
    from the paper's 512 wide, 8 deep, 16 heads for a CPU), and the target normalisation.

    Example:
        >>> from metricssl.ssl.mae import MAEConfig
        >>> MAEConfig().mask_ratio, MAEConfig().decoder_width
        (0.75, 128)
    """

    mask_ratio: float = param(0.75, low=0, high=1, low_inclusive=False, high_inclusive=False)
    decoder_width: int = param(128, low=1, integer=True)
    decoder_depth: int = param(2, low=1, integer=True)
    decoder_heads: int = param(4, low=1, integer=True)
    norm_pix_loss: bool = param(True)


class MAE(SSLMethod):
    """Masked autoencoder: hide most patches of each image, rebuild their pixels.

    He, Chen, Xie, Li, Dollár and Girshick, "Masked Autoencoders Are Scalable Vision
    Learners", CVPR 2022. The image is cut into the ViT's patches, a random ``mask_ratio``
    of them (75% by default) is hidden, drawn independently per image, and the ViT encoder
    runs on the visible patches only (with its class token), which makes a step about
    ``1 / (1 - mask_ratio)`` times cheaper than a full pass. A light transformer decoder
    (:class:`MAEDecoder`) puts a mask token at each hidden position, adds its own position
    embeddings, and predicts every patch's pixels; the loss (:func:`mae_loss`) is the mean
    squared error on the hidden patches only, against per-patch normalised pixels with
    ``norm_pix_loss`` (the paper's default). The decoder is for training only.

    The target is the view in the space the recipe produces (normalised floats when the
    recipe normalises). The masks come from torch's default generator of the images'
    device, which the Trainer checkpoints, so a resumed run draws the same masks.
    :meth:`embed` (kNN monitoring, evaluation, indexing) is the backbone's usual pass over
    the whole image, its class token. MAE's features are known to be weaker under kNN than
    under a linear probe, and weaker under a linear probe than after fine-tuning (the paper
    discusses it), so judge them with the linear probe.

    Args:
        backbone: a :class:`~metricssl.models.vit.VisionTransformer` (``vit_tiny``,
            ``vit_small``); MAE needs its patches, so another module is refused.
        mask_ratio: the share of each image's patches hidden from the encoder, in (0, 1);
            at least one patch must stay visible and one hidden.
        decoder_width, decoder_depth, decoder_heads: the decoder's token width (divisible by
            ``decoder_heads`` and by 4), blocks and attention heads.
        norm_pix_loss: normalise each target patch by its own mean and variance.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from metricssl.models.vit import VisionTransformer
        >>> from metricssl.ssl.mae import MAE
        >>> from metricssl.ssl.method import Batch
        >>> vit = VisionTransformer(image_size=8, patch_size=2, in_channels=1, width=16,
        ...                         depth=1, heads=2)
        >>> method = MAE(vit, decoder_width=8, decoder_depth=1, decoder_heads=2)
        >>> out = method.training_step(Batch([torch.randn(4, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> sorted(out)
        ['loss']
    """

    name = "mae"
    num_views = 1
    min_batch_size = 1

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = MAEConfig.mask_ratio,
        decoder_width: int = MAEConfig.decoder_width,
        decoder_depth: int = MAEConfig.decoder_depth,
        decoder_heads: int = MAEConfig.decoder_heads,
        norm_pix_loss: bool = MAEConfig.norm_pix_loss,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        if not isinstance(backbone, VisionTransformer):
            raise TypeError(
                "MAE needs a VisionTransformer backbone (vit_tiny, vit_small) to mask its "
                f"patches, got backbone={type(backbone).__name__}"
            )
        MAEConfig.check(mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss)
        patch_dim = backbone.patch_size**2 * backbone.in_channels
        if norm_pix_loss and patch_dim < 2:
            raise ArgumentError(
                "norm_pix_loss needs at least 2 pixels per patch (a patch's variance); the "
                "backbone's patches have 1"
            )
        self.decoder = MAEDecoder(
            backbone.num_features, patch_dim, decoder_width, decoder_depth, decoder_heads
        )
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)

    def visible_patches(self, num_patches: int) -> int:
        """How many of an image's ``num_patches`` patches the encoder sees (the paper's
        ``int(L * (1 - mask_ratio))``); a ratio that leaves none visible or none hidden is
        an error."""
        keep = int(num_patches * (1 - self.mask_ratio))
        if not 0 < keep < num_patches:
            raise ValueError(
                f"mask_ratio={self.mask_ratio} leaves {keep} of the {num_patches} patches "
                "visible; at least one must be visible and one hidden"
            )
        return keep

    def mask_noise(self, patches: torch.Tensor) -> torch.Tensor:
        """One uniform number per patch, ``(N, L)`` for patches ``(N, L, D)``: the patches
        with the smallest numbers stay visible. Drawn from torch's default generator of the
        patches' device."""
        return rnd.rand(patches.shape[:2], patches.device)

    def random_order(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A random permutation of each image's patches, ``(order, restore)``, both
        ``(N, L)``: ``order[i, :K]`` are image i's visible patches (K =
        :meth:`visible_patches`), and ``restore[i, j]`` is patch j's place in the order, so
        the hidden patches are ``restore >= K``.

        Example:
            >>> import torch
            >>> from metricssl.models.vit import VisionTransformer
            >>> vit = VisionTransformer(8, 2, 1, width=16, depth=1, heads=2)
            >>> method = MAE(vit, decoder_width=8, decoder_depth=1, decoder_heads=2)
            >>> order, restore = method.random_order(torch.randn(3, 16, 4))
            >>> (restore >= method.visible_patches(16)).sum(dim=1).tolist()
            [12, 12, 12]
        """
        order = self.mask_noise(patches).argsort(dim=1)
        return order, order.argsort(dim=1)

    def param_groups(self) -> list[dict]:
        """Two groups: the weight matrices, tokens and position embeddings with the run's
        weight decay, and the biases and LayerNorm weights (1-D) without, as the paper's
        code trains them."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.ndim > 1]},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        images = batch.views[0]
        vit = self.backbone
        target = patchify(images, vit.patch_size)
        grid = (images.shape[-2] // vit.patch_size, images.shape[-1] // vit.patch_size)
        tokens = vit.patch_tokens(images)
        n, length, width = tokens.shape
        keep = self.visible_patches(length)
        order, restore = self.random_order(target)
        visible = tokens.gather(1, order[:, :keep, None].expand(-1, -1, width))
        encoded = vit.encode(torch.cat([vit.class_tokens(n), visible], dim=1))
        prediction = self.decoder(encoded, restore, grid)
        # The squared errors in float32 (or wider), also under autocast.
        dtype = accumulation_dtype(torch.promote_types(prediction.dtype, target.dtype))
        with torch.autocast(device_type=images.device.type, enabled=False):
            prediction, target = prediction.to(dtype), target.to(dtype)
            loss = mae_loss(prediction, target, restore >= keep, self.norm_pix_loss)
        return {"loss": loss}
