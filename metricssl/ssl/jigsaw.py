"""Jigsaw puzzles: learn features by telling which permutation shuffled an image's tiles."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import random as rnd
from ..augment.compose import MultiView
from ..augment.recipes import light_view
from ..core.validation import check_module, check_number
from ..models.heads import ProjectionHead
from .method import Batch, MethodConfig, SSLMethod, param

MIN_TILE_SIZE = 2
MAX_PERMUTATIONS = 1000
# Up to 9 tiles (a 3x3 grid, 9! = 362880 orderings) every permutation is a candidate, as in
# the paper; beyond, a seeded sample of them (16! is about 2e13).
_ENUMERATE_UP_TO = 9


# -- the permutation set ---------------------------------------------------------------------


def _all_permutations(n: int) -> torch.Tensor:
    """Every permutation of ``range(n)`` as an (n!, n) int8 tensor, in a fixed order."""
    perms = torch.zeros(1, 1, dtype=torch.int8)
    for m in range(1, n):
        # Insert the new element m at each of the m + 1 positions of every permutation of m.
        new = torch.full((perms.shape[0], 1), m, dtype=torch.int8)
        perms = torch.cat([torch.cat([perms[:, :i], new, perms[:, i:]], 1) for i in range(m + 1)])
    return perms


def _candidate_permutations(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    if n <= _ENUMERATE_UP_TO:
        return _all_permutations(n)
    pool = max(50 * count, 50_000)
    sampled = torch.rand((pool, n), generator=generator).argsort(dim=1).to(torch.int8)
    return torch.unique(sampled, dim=0)  # sorted, so the order is fixed too


@functools.lru_cache(maxsize=8)
def _maximal_hamming_set(num_tiles: int, num_permutations: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    candidates = _candidate_permutations(num_tiles, num_permutations, generator)
    columns = candidates.t().contiguous()
    m = candidates.shape[0]
    nearest = torch.full((m,), num_tiles + 1, dtype=torch.int32)
    total = torch.zeros(m, dtype=torch.int64)
    scale = num_tiles * num_permutations + 1  # larger than any total: ranks by nearest first
    chosen = []
    j = int(torch.randint(m, (1,), generator=generator))
    for _ in range(num_permutations):
        chosen.append(j)
        distance = torch.zeros(m, dtype=torch.uint8)
        for position in range(num_tiles):
            distance += columns[position] != columns[position, j]
        nearest = torch.minimum(nearest, distance)
        total += distance
        nearest[j] = -1
        j = int((nearest.long() * scale + total).argmax())
    return candidates[chosen].long()


def jigsaw_permutations(num_tiles: int, num_permutations: int, seed: int = 0) -> torch.Tensor:
    """A fixed set of ``num_permutations`` permutations of ``num_tiles`` tiles, far apart in
    Hamming distance, as a (num_permutations, num_tiles) int64 tensor.

    Noroozi and Favaro's greedy selection (their Algorithm 1): start from a permutation drawn
    at random (from a generator seeded with ``seed``), then repeatedly add the candidate
    farthest from those chosen so far. The paper ranks candidates by their summed Hamming
    distance to the chosen set; here they are ranked by their distance to the nearest chosen
    one, ties broken by the summed distance. That keeps the paper's average distance
    (8.08 of 9 for 100 permutations of 9 tiles, seed 0) and raises the minimum from 2 to 6,
    so no two classes differ by a single swap. Candidates are all ``num_tiles!``
    permutations up to 9 tiles; beyond, a seeded sample of ``max(50 * num_permutations,
    50000)`` of them. The set depends only on the arguments (the same on every machine and
    run); the greedy pass takes under a second for 100 permutations of 9 tiles and about
    ten seconds for 1000 on one CPU thread, once per process (the result is cached).

    Example:
        >>> from metricssl.ssl.jigsaw import jigsaw_permutations
        >>> perms = jigsaw_permutations(4, 6, seed=0)
        >>> perms.shape, sorted(perms[0].tolist())
        (torch.Size([6, 4]), [0, 1, 2, 3])
    """
    check_number("num_tiles", num_tiles, low=2, integer=True)
    check_number("seed", seed, low=0, integer=True)
    check_number("num_permutations", num_permutations, low=2, integer=True)
    if num_tiles <= 20 and num_permutations > math.factorial(num_tiles):
        raise ValueError(
            f"num_permutations={num_permutations} is more than the {math.factorial(num_tiles)} "
            f"orderings of {num_tiles} tiles"
        )
    if num_permutations > MAX_PERMUTATIONS:
        raise ValueError(
            f"num_permutations must be <= {MAX_PERMUTATIONS} (the paper's largest set), got "
            f"{num_permutations}"
        )
    return _maximal_hamming_set(int(num_tiles), int(num_permutations), int(seed)).clone()


# -- tiles -----------------------------------------------------------------------------------


class TileGeometry(NamedTuple):
    """Where the tiles of a ``height x width`` image come from.

    The central ``grid * cell_height`` by ``grid * cell_width`` region (the largest multiple
    of the grid; its position is drawn per image) is cut into ``grid x grid`` cells; each
    tile is a ``tile_height x tile_width`` window of its cell, at an offset of ``0 ..
    jitter`` pixels drawn per tile and axis.
    """

    grid: int
    cell_height: int
    cell_width: int
    tile_height: int
    tile_width: int
    jitter_height: int
    jitter_width: int


def tile_geometry(
    height: int, width: int, grid: int, tile_jitter: int | None = None
) -> TileGeometry:
    """The tiling of a ``height x width`` image by a ``grid x grid`` puzzle.

    ``tile_jitter=None`` picks ``cell // 4`` pixels of play per axis (9 px cells of a 28 px
    image hold 7 px tiles; the paper's 75 px cells hold 64 px tiles), reduced where needed so
    tiles keep at least ``MIN_TILE_SIZE`` (2) pixels. Raises ``ValueError`` when the grid
    does not fit: ``grid < 2``, cells or tiles under 2 pixels.

    Example:
        >>> from metricssl.ssl.jigsaw import tile_geometry
        >>> geometry = tile_geometry(28, 28, 3)
        >>> geometry.cell_height, geometry.tile_height, geometry.jitter_height
        (9, 7, 2)
    """
    check_number("grid", grid, low=2, integer=True)
    check_number("tile_jitter", tile_jitter, low=0, integer=True, allow_none=True)
    cells = (height // grid, width // grid)
    if min(cells) < MIN_TILE_SIZE:
        raise ValueError(
            f"grid={grid} does not fit {height}x{width} images: the cells would be "
            f"{cells[0]}x{cells[1]} pixels, under the {MIN_TILE_SIZE}-pixel minimum; use a "
            f"smaller grid or larger images"
        )
    if tile_jitter is None:
        jitter = tuple(min(c // 4, c - MIN_TILE_SIZE) for c in cells)
    else:
        jitter = (int(tile_jitter),) * 2
        if min(cells) - tile_jitter < MIN_TILE_SIZE:
            raise ValueError(
                f"tile_jitter={tile_jitter} leaves tiles of {cells[0] - tile_jitter}x"
                f"{cells[1] - tile_jitter} pixels in the {cells[0]}x{cells[1]} cells of a "
                f"{grid}x{grid} grid on {height}x{width} images; it must be at most "
                f"{min(cells) - MIN_TILE_SIZE}"
            )
    return TileGeometry(
        int(grid), cells[0], cells[1], cells[0] - jitter[0], cells[1] - jitter[1], *jitter
    )


def image_to_tiles(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Cut ``(N, C, H, W)`` images (H and W multiples of ``grid``) into ``(N, grid**2, C,
    H / grid, W / grid)`` tiles, row by row (tile ``r * grid + c`` is row ``r``, column
    ``c``). A reshape and a permute of the whole batch, no copy per image.

    Example:
        >>> import torch
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> image_to_tiles(x, 2)[0, 1, 0].tolist()
        [[2.0, 3.0], [6.0, 7.0]]
    """
    n, c, h, w = images.shape
    if h % grid or w % grid:
        raise ValueError(f"images of {h}x{w} pixels do not split into a {grid}x{grid} grid")
    tiles = images.reshape(n, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(n, grid * grid, c, h // grid, w // grid)


def tiles_to_image(tiles: torch.Tensor, grid: int) -> torch.Tensor:
    """The inverse of :func:`image_to_tiles`: ``(N, grid**2, C, h, w)`` tiles in row order
    -> ``(N, C, grid * h, grid * w)`` images."""
    n, t, c, h, w = tiles.shape
    if t != grid * grid:
        raise ValueError(f"a {grid}x{grid} grid has {grid * grid} tiles, got {t}")
    images = tiles.reshape(n, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return images.reshape(n, c, grid * h, grid * w)


def _windows(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``x[..., top:top + height, left:left + width]`` with one (top, left) per leading
    index: ``x`` is ``(*lead, C, H, W)``, ``top``/``left`` are ``lead``-shaped; one gather."""
    lead = x.shape[:-3]
    rows = top.unsqueeze(-1) + torch.arange(height, device=x.device)  # (*lead, height)
    cols = left.unsqueeze(-1) + torch.arange(width, device=x.device)  # (*lead, width)
    flat = x.reshape(-1, *x.shape[-3:])
    k = torch.arange(flat.shape[0], device=x.device).view(-1, 1, 1)
    rows = rows.reshape(-1, height, 1)
    cols = cols.reshape(-1, 1, width)
    # Advanced indices around a slice: the result is (K, height, width, C).
    out = flat[k, :, rows, cols].permute(0, 3, 1, 2)
    return out.reshape(*lead, x.shape[-3], height, width)


def _offsets(
    shape: tuple[int, ...], high: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """Integers uniform in ``0 .. high`` (inclusive), of ``shape``."""
    if high == 0:
        return torch.zeros(shape, dtype=torch.long, device=device)
    u = rnd.rand(shape, device, generator)
    return (u * (high + 1)).long().clamp_(max=high)


def cut_tiles(
    images: torch.Tensor,
    grid: int,
    tile_jitter: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The ``grid x grid`` tiles of each image, in row-major order: ``(N, grid**2, C,
    tile_h, tile_w)``; the whole batch at once.

    A region of ``grid`` whole cells is cropped at a random position in each image, and in
    every cell a tile is cut at a random offset of ``0 .. jitter`` pixels (see
    :func:`tile_geometry`), so tiles do not meet edge to edge. Draws from ``generator``, else
    from torch's default generator of the images' device. Shared by :class:`Jigsaw` and
    :class:`~metricssl.ssl.pirl.PIRL`.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, _, height, width = images.shape
    geo = tile_geometry(height, width, grid, tile_jitter)
    device = images.device
    region_h, region_w = grid * geo.cell_height, grid * geo.cell_width
    top = _offsets((n,), height - region_h, device, generator)
    left = _offsets((n,), width - region_w, device, generator)
    cells = image_to_tiles(_windows(images, top, left, region_h, region_w), grid)
    if not (geo.jitter_height or geo.jitter_width):
        return cells
    t = grid * grid
    dy = _offsets((n, t), geo.jitter_height, device, generator)
    dx = _offsets((n, t), geo.jitter_width, device, generator)
    return _windows(cells, dy, dx, geo.tile_height, geo.tile_width)


def standardize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile of ``(N, T, C, h, w)`` to zero mean and unit variance (the paper's guard
    against matching tiles by brightness and contrast)."""
    mean = tiles.mean(dim=(2, 3, 4), keepdim=True)
    std = tiles.std(dim=(2, 3, 4), keepdim=True)
    # Flat tiles (background) would otherwise be divided by ~0.
    return (tiles - mean) / std.clamp(min=1e-2)


# -- recipe and heads ------------------------------------------------------------------------


def jigsaw_views(
    image_size,
    *,
    crop_scale: tuple[float, float] = (0.6, 1.0),
    flip_p: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **options,
) -> MultiView:
    """Jigsaw's recipe: one lightly augmented full-size view per image; the puzzle (crop of
    the grid region, tiles, jitter, shuffle) is made in the training step.

    A random resized crop of 60-100% of the area (back to ``image_size``), a horizontal flip
    with p = 0.5, then the normalisation; no colour jitter, grayscale or blur by default
    (``options`` may turn them on: they are :func:`~metricssl.augment.augmentation_view`'s
    arguments; on colour images the paper's grayscale and colour jitter guard against
    chromatic-aberration shortcuts).

    Example:
        >>> import torch
        >>> from metricssl.ssl.jigsaw import jigsaw_views
        >>> views = jigsaw_views(28, mean=[0.5], std=[0.3])(
        ...     torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
        >>> len(views), tuple(views[0].shape)
        (1, (4, 1, 28, 28))
    """
    return light_view(image_size, crop_scale, flip_p, mean, std, **options)


def jigsaw_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """The context-free network's heads.

    ``tile_head`` (the paper's per-tile fc6, shared by all tiles): ``Linear(feature_dim,
    tile_dim) -> BatchNorm1d -> ReLU``, or none when ``tile_dim`` is None.
    ``classification_head`` (fc7 + fc8): a two-layer
    :class:`~metricssl.models.heads.ProjectionHead` from the ``grid**2`` concatenated tile
    features (``grid**2 * tile_dim``) through ``head_hidden_dim`` to ``num_permutations``
    logits. The tile head keeps the concatenation narrow: a 512-feature backbone on 9 tiles
    would otherwise give 4608 inputs.
    """
    grid, num_permutations = hparams["grid"], hparams["num_permutations"]
    tile_dim, hidden = hparams["tile_dim"], hparams["head_hidden_dim"]
    check_number("grid", grid, low=2, integer=True)
    check_number("num_permutations", num_permutations, low=2, integer=True)
    check_number("tile_dim", tile_dim, low=1, integer=True, allow_none=True)
    check_number("head_hidden_dim", hidden, low=1, integer=True)
    heads: dict[str, nn.Module] = {}
    width = feature_dim
    if tile_dim is not None:
        heads["tile_head"] = nn.Sequential(
            nn.Linear(feature_dim, int(tile_dim), bias=False),
            nn.BatchNorm1d(int(tile_dim)),
            nn.ReLU(inplace=True),
        )
        width = int(tile_dim)
    heads["classification_head"] = ProjectionHead(
        int(grid) ** 2 * width, int(hidden), int(num_permutations)
    )
    return heads


# -- the method ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JigsawConfig(MethodConfig):
    """Jigsaw's hyper-parameters: tiles, permutations and head widths.

    Example:
        >>> from metricssl.ssl.jigsaw import JigsawConfig
        >>> JigsawConfig().head_hidden_dim
        512
    """

    grid: int = param(3, low=2, integer=True)
    num_permutations: int = param(100, low=2, integer=True)
    permutation_seed: int = param(0, low=0, integer=True)
    tile_jitter: int | None = param(None, low=0, integer=True, allow_none=True)
    normalize_tiles: bool = param(False)
    tile_dim: int | None = param(128, low=1, integer=True, allow_none=True)
    head_hidden_dim: int = param(512, low=1, integer=True)


class Jigsaw(SSLMethod):
    """Jigsaw puzzles: tell which of a fixed set of permutations shuffled an image's tiles.

    Noroozi and Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw
    Puzzles", ECCV 2016. Each view is cut into ``grid x grid`` tiles
    (:meth:`make_puzzles`): a region of ``grid`` whole cells is cropped at a random position
    (for 28x28 images and a 3x3 grid, 27x27 -> nine 9x9 cells), and in every cell a smaller
    tile is cut at a random offset (``tile_jitter`` pixels of play; by default 7x7 tiles in
    9x9 cells), so that tiles do not meet edge to edge and the puzzle cannot be solved by
    matching low-level edge continuity, as in the paper. The tiles are then put in the order
    of one permutation, drawn uniformly per image from ``num_permutations`` fixed ones
    (:func:`jigsaw_permutations`, far apart in Hamming distance), and the label is the
    permutation's index.

    The context-free network: every tile goes through the shared backbone (and the optional
    ``tile_head``) on its own; the tiles' features are concatenated in the shuffled order and
    ``classification_head`` predicts the permutation (cross-entropy). Puzzle position ``k``
    holds tile ``permutations[label, k]`` of the row-major grid.

    The backbone must accept tile-sized images (:class:`~metricssl.models.SmallCNN` and the
    ResNets pool adaptively); at evaluation ``embed()`` gives its features of whole clean
    images, the standard use of Jigsaw features. ``normalize_tiles=True`` gives each tile
    zero mean and unit variance, the paper's guard against matching tiles by their mean
    brightness and contrast; it is off by default because the backbone then sees differently
    scaled inputs in training (tiles) and in ``embed()`` (whole images normalised by the
    dataset's statistics).

    The permutation set is a buffer (in ``state_dict()``), so a checkpoint keeps the labels'
    meaning; its construction is deterministic in ``(grid, num_permutations,
    permutation_seed)``. Region positions, tile offsets and labels come from torch's default
    generator of the views' device (which the Trainer checkpoints).

    Logged: ``jigsaw_accuracy``, the share of puzzles whose permutation is predicted.

    Args:
        backbone: images (and tiles) -> features.
        classification_head: ``grid**2`` concatenated tile features -> ``num_permutations``
            logits.
        tile_head: features of one tile -> its feature in the concatenation (shared by all
            tiles), or None for the backbone's features as they are.
        grid: tiles per side (3 in the paper), >= 2.
        num_permutations: permutation classes (100 in the paper's main results), 2 ..
            ``min((grid**2)!, 1000)``.
        permutation_seed: seed of the permutation set's construction.
        tile_jitter: pixels of play of a tile in its cell; None: ``cell // 4`` (see
            :func:`tile_geometry`).
        normalize_tiles: normalise each tile to zero mean and unit variance.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`. With
            ``input_shape`` the tiling is checked at construction, else at the first step.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.jigsaw import Jigsaw
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
        ...                          nn.Flatten())
        >>> method = Jigsaw(backbone, nn.Linear(4 * 8, 10), grid=2, num_permutations=10,
        ...                 input_shape=(1, 8, 8))
        >>> out = method.training_step(Batch([torch.rand(6, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> sorted(out), tuple(method.embed(torch.rand(3, 1, 8, 8)).shape)
        (['jigsaw_accuracy', 'loss'], (3, 8))
    """

    name = "jigsaw"
    num_views = 1
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        classification_head: nn.Module,
        tile_head: nn.Module | None = None,
        grid: int = JigsawConfig.grid,
        num_permutations: int = JigsawConfig.num_permutations,
        permutation_seed: int = JigsawConfig.permutation_seed,
        tile_jitter: int | None = JigsawConfig.tile_jitter,
        normalize_tiles: bool = JigsawConfig.normalize_tiles,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_module("classification_head", classification_head)
        check_module("tile_head", tile_head, allow_none=True)
        JigsawConfig.check(
            grid=grid,
            tile_jitter=tile_jitter,
            permutation_seed=permutation_seed,
            normalize_tiles=normalize_tiles,
        )
        if self.input_shape is not None:
            tile_geometry(self.input_shape[1], self.input_shape[2], grid, tile_jitter)
        permutations = jigsaw_permutations(grid * grid, num_permutations, permutation_seed)
        out = getattr(classification_head, "output_dim", None)
        if out is not None and out != num_permutations:
            raise ValueError(
                f"classification_head must give num_permutations={num_permutations} logits, "
                f"its output_dim is {out}"
            )
        self.classification_head = classification_head
        self.tile_head = tile_head
        self.grid = int(grid)
        self.num_permutations = int(num_permutations)
        self.permutation_seed = int(permutation_seed)
        self.tile_jitter = None if tile_jitter is None else int(tile_jitter)
        self.normalize_tiles = bool(normalize_tiles)
        self.register_buffer("permutations", permutations)

    def make_puzzles(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tiles, labels)``: the shuffled tiles ``(N, grid**2, C, tile_h, tile_w)`` and
        the permutation index ``(N,)`` of each image; the whole batch at once.

        Tile ``k`` of image ``i`` is tile ``permutations[labels[i], k]`` of its row-major
        grid, so ``tiles[i][permutations[labels[i]].argsort()]`` puts them back in order.
        Draws from ``generator``, else from torch's default generator of the images' device.
        """
        tiles = cut_tiles(images, self.grid, self.tile_jitter, generator)
        n, device = images.shape[0], images.device
        labels = _offsets((n,), self.num_permutations - 1, device, generator)
        order = self.permutations.to(device)[labels]  # (N, T)
        tiles = tiles[torch.arange(n, device=device).unsqueeze(1), order]
        if self.normalize_tiles:
            tiles = standardize_tiles(tiles)
        return tiles, labels

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        tiles, labels = self.make_puzzles(batch.views[0])
        n, t = tiles.shape[:2]
        features = self.backbone(tiles.flatten(0, 1))
        if self.tile_head is not None:
            features = self.tile_head(features)
        if features.ndim != 2 or features.shape[0] != n * t:
            raise ValueError(
                f"the backbone (and tile_head) must map {n * t} tiles to ({n * t}, F) features, "
                f"got {tuple(features.shape)}"
            )
        expected = getattr(self.classification_head, "input_dim", None)
        if expected is not None and expected != t * features.shape[1]:
            raise ValueError(
                f"classification_head takes {expected} features but the {t} tiles give "
                f"{t} x {features.shape[1]} = {t * features.shape[1]}; build it for "
                f"grid**2 times the tile features"
            )
        logits = self.classification_head(features.reshape(n, t * features.shape[1]))
        if logits.ndim != 2 or logits.shape[1] != self.num_permutations:
            raise ValueError(
                f"classification_head must give (N, {self.num_permutations}) logits, got "
                f"{tuple(logits.shape)}"
            )
        # The cross-entropy in float32, also under autocast.
        with torch.autocast(device_type=logits.device.type, enabled=False):
            loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "jigsaw_accuracy": accuracy}
