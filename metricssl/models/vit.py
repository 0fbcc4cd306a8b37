"""Vision Transformer (ViT) in plain torch, with tiny and small widths for small images."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import ArgumentError, check_number


def _size_pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        check_number(name, value, low=1, integer=True)
        return int(value), int(value)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise TypeError(f"{name} must be an int or a pair (height, width) of ints, got {value!r}")
    for i, v in enumerate(value):
        check_number(f"{name}[{i}]", v, low=1, integer=True)
    return int(value[0]), int(value[1])


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, w = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        # The fused kernel picks flash/memory-efficient attention where the device has them.
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, t, w)))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``, on tokens
    ``(N, T, width)``; the encoder's blocks and MAE's decoder's.

    Example:
        >>> import torch
        >>> TransformerBlock(width=16, heads=2)(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = _Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers
    for Image Recognition at Scale", ICLR 2021).

    The image is cut into ``patch_size`` squared patches by a strided convolution, a learned
    class token is put in front, learned position embeddings are added, and ``depth`` pre-norm
    transformer blocks (multi-head self-attention, then an MLP of ``mlp_ratio * width`` hidden
    units with GELU, each behind a LayerNorm and a residual) follow; after a final LayerNorm
    the class token's features are the output, shape ``(N, width)`` (``num_features``).

    The position embeddings are learned for an ``image_size`` input. Images of another size
    (the local crops of DINO, the tiles of Jigsaw) go through too: the embeddings are
    resized bicubically to their patch grid, as DINO does; rows and columns beyond the last
    whole patch are left out, as the strided convolution does. An image smaller than one patch
    is an error.

    Args:
        image_size: the training images' size, an int (square) or ``(height, width)``; each
            side must be divisible by ``patch_size``.
        patch_size: side of the square patches (4 suits 28x28 and 32x32 images, 16 the
            ImageNet sizes).
        in_channels: image channels (1 for grayscale).
        width: the token width (``num_features``); divisible by ``heads``.
        depth: transformer blocks.
        heads: attention heads per block.
        mlp_ratio: hidden units of each block's MLP, as a multiple of ``width``.
        dropout: dropout on the attention weights, after the attention projection and in the
            MLP (0 by default, as in self-supervised ViTs).

    Example:
        >>> import torch
        >>> from metricssl.models.vit import VisionTransformer
        >>> net = VisionTransformer(image_size=28, patch_size=4, in_channels=1, width=64,
        ...                         depth=2, heads=4)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        width: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        height, wide = _size_pair("image_size", image_size)
        check_number("patch_size", patch_size, low=1, integer=True)
        check_number("in_channels", in_channels, low=1, integer=True)
        check_number("width", width, low=1, integer=True)
        check_number("depth", depth, low=1, integer=True)
        check_number("heads", heads, low=1, integer=True)
        check_number("mlp_ratio", mlp_ratio, low=0, low_inclusive=False)
        check_number("dropout", dropout, low=0, high=1, high_inclusive=False)
        if height % patch_size or wide % patch_size:
            raise ArgumentError(
                f"image_size {(height, wide)} must be divisible by patch_size={patch_size}"
            )
        if width % heads:
            raise ArgumentError(f"width={width} must be divisible by heads={heads}")
        self.image_size = (height, wide)
        self.patch_size = int(patch_size)
        self.in_channels = int(in_channels)
        self.num_features = int(width)
        self.grid = (height // patch_size, wide // patch_size)
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], width))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *(TransformerBlock(width, heads, mlp_ratio, dropout) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        # The initialisation of the reference ViT/MAE code: small truncated-normal tokens and
        # position embeddings, Xavier-uniform linear layers (and the patch projection, seen
        # as a linear map of the flattened patch), zero biases.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        width = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, *self.grid, width).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], width)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_tokens(images)
        tokens = torch.cat([self.class_tokens(tokens.shape[0]), tokens], dim=1)
        return self.encode(tokens)[:, 0]

    # -- the pieces of forward, for methods that run the encoder on some patches (MAE) ----

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The patches' tokens with their position embeddings, ``(N, L, width)``, in
        row-major order of the patch grid (the order of :func:`patchify`); no class token.

        Example:
            >>> import torch
            >>> net = VisionTransformer(image_size=8, patch_size=4, in_channels=1, width=16,
            ...                         depth=1, heads=2)
            >>> net.patch_tokens(torch.randn(3, 1, 8, 8)).shape
            torch.Size([3, 4, 16])
        """
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"VisionTransformer expects images of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(images.shape)}"
            )
        if min(images.shape[-2:]) < self.patch_size:
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} px are smaller than one "
                f"{self.patch_size}x{self.patch_size} patch (patch_size={self.patch_size})"
            )
        x = self.patch_embed(images)  # (N, width, H/p, W/p)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2) + self._position_embedding(grid)[:, 1:]

    def class_tokens(self, n: int) -> torch.Tensor:
        """The class token with its position embedding, ``(n, 1, width)``, to put in front
        of the patch tokens."""
        return (self.cls_token + self.pos_embed[:, :1]).expand(n, -1, -1)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """The transformer on any tokens ``(N, T, width)`` (all patches, or a subset, with
        the class token first): dropout, the blocks, the final LayerNorm."""
        return self.norm(self.blocks(self.pos_drop(tokens)))


def _check_patch_size(patch_size) -> int:
    check_number("patch_size", patch_size, low=1, integer=True)
    return int(patch_size)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images ``(N, C, H, W)`` into flattened square patches ``(N, L, p * p * C)``:
    patches in row-major order of the grid (as :meth:`VisionTransformer.patch_tokens`), the
    pixels of each row by row, channels last (MAE's layout). H and W must be divisible by
    ``patch_size``.

    Example:
        >>> import torch
        >>> patchify(torch.arange(16.0).view(1, 1, 4, 4), 2)[0, 1].tolist()
        [2.0, 3.0, 6.0, 7.0]
    """
    p = _check_patch_size(patch_size)
    if not torch.is_tensor(images) or images.ndim != 4:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {shape}")
    n, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"images of {h}x{w} px do not divide into patches of {p} (patch_size)")
    x = images.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`patchify`: patches ``(N, L, p * p * C)`` on a ``grid`` of
    ``(rows, columns)`` patches (``rows * columns == L``) back to images ``(N, C, H, W)``.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, 8, 12)
        >>> torch.equal(unpatchify(patchify(x, 4), 4, (2, 3)), x)
        True
    """
    p = _check_patch_size(patch_size)
    rows, cols = _size_pair("grid", grid)
    if not torch.is_tensor(patches) or patches.ndim != 3:
        shape = tuple(patches.shape) if torch.is_tensor(patches) else type(patches).__name__
        raise ValueError(f"patches must be a (N, L, p * p * C) tensor, got {shape}")
    n, length, dim = patches.shape
    if length != rows * cols or dim % (p * p):
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not fit a {rows}x{cols} grid of "
            f"{p}x{p} patches (grid, patch_size)"
        )
    c = dim // (p * p)
    x = patches.reshape(n, rows, cols, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, c, rows * p, cols * p)


def sincos_position_embedding(
    width: int,
    grid: tuple[int, int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings ``(1, 1 + rows * cols, width)`` for a grid
    of patches, with a zero row in front for the class token (MAE's decoder embeddings):
    half the width encodes the row, half the column, each as sines and cosines of
    ``position / 10000 ** (i / (width / 4))``. ``width`` must be divisible by 4.

    Example:
        >>> sincos_position_embedding(8, (2, 3)).shape
        torch.Size([1, 7, 8])
    """
    check_number("width", width, low=4, integer=True)
    if width % 4:
        raise ArgumentError(f"width={width} must be divisible by 4")
    rows, cols = _size_pair("grid", grid)
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float64) / quarter)

    def axis(positions: torch.Tensor) -> torch.Tensor:
        angles = positions.to(torch.float64)[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    table = torch.cat([axis(r), axis(c)], dim=1)
    table = torch.cat([table.new_zeros(1, width), table])
    return table.to(dtype).unsqueeze(0)


def default_patch_size(image_size: int | tuple[int, int]) -> int:
    """The patch size the registry uses when none is given: 4 for images up to 64 px on
    their longer side (a 7x7 grid at 28 px, 8x8 at 32 px), 16 above (14x14 at 224 px).

    Example:
        >>> default_patch_size(28), default_patch_size((224, 224))
        (4, 16)
    """
    return 4 if max(_size_pair("image_size", image_size)) <= 64 else 16


def vit_tiny(
    image_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    in_channels: int = 3,
    **kwargs,
) -> VisionTransformer:
    """ViT-Tiny: width 192, depth 12, 3 heads (about 5.5 M parameters); other arguments
    of :class:`VisionTransformer` (``depth``, ``dropout``, ...) may be given.

    Example:
        >>> import torch
        >>> from metricssl.models.vit import vit_tiny
        >>> net = vit_tiny(image_size=32, patch_size=4, depth=1)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 192])
    """
    settings = {"width": 192, "depth": 12, "heads": 3, **kwargs}
    return VisionTransformer(image_size, patch_size, in_channels, **settings)


def vit_small(
    image_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    in_channels: int = 3,
    **kwargs,
) -> VisionTransformer:
    """ViT-Small: width 384, depth 12, 6 heads (about 21.7 M parameters); other arguments
    of :class:`VisionTransformer` may be given.

    Example:
        >>> import torch
        >>> from metricssl.models.vit import vit_small
        >>> net = vit_small(image_size=28, patch_size=4, in_channels=1, depth=1)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 384])
    """
    settings = {"width": 384, "depth": 12, "heads": 6, **kwargs}
    return VisionTransformer(image_size, patch_size, in_channels, **settings)
