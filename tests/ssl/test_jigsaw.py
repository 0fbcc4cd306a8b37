"""Jigsaw: the permutation set, tiling and reassembly, the loss, resume, errors."""

import itertools
import math

import pytest
import torch
from torch import nn

from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.jigsaw import (
    Jigsaw,
    image_to_tiles,
    jigsaw_heads,
    jigsaw_permutations,
    jigsaw_views,
    tile_geometry,
    tiles_to_image,
)
from metricssl.ssl.method import Batch
from metricssl.ssl.registry import METHODS, build_method
from tests.ssl.pretext_checks import train_and_record

HPARAMS = dict(METHODS["jigsaw"].hparams)
SMALL = {"grid": 2, "num_permutations": 8, "tile_dim": 16, "head_hidden_dim": 32, "tile_jitter": 0}


def hamming(perms):
    d = (perms[:, None, :] != perms[None, :, :]).sum(2)
    return d[~torch.eye(len(perms), dtype=torch.bool)]


def make(seed=0, size=8, **kwargs):
    torch.manual_seed(seed)
    hp = {**HPARAMS, **SMALL, **kwargs}
    heads = jigsaw_heads(16, hp)
    args = {k: hp[k] for k in ("grid", "num_permutations", "permutation_seed", "tile_jitter")}
    args["normalize_tiles"] = hp["normalize_tiles"]
    backbone = SmallCNN(1, embedding_dim=16, width=8)
    return Jigsaw(backbone, **heads, **args, input_shape=(1, size, size))


# -- permutations ----------------------------------------------------------------------------


def test_permutation_set_is_deterministic_unique_and_far_apart():
    perms = jigsaw_permutations(9, 100, seed=0)
    assert perms.shape == (100, 9) and perms.dtype == torch.int64
    assert torch.equal(perms, jigsaw_permutations(9, 100, seed=0))
    assert not torch.equal(perms, jigsaw_permutations(9, 100, seed=1))
    assert torch.equal(perms.sort(dim=1).values, torch.arange(9).expand(100, 9))
    assert len(torch.unique(perms, dim=0)) == 100
    d = hamming(perms)
    assert int(d.min()) >= 6 and float(d.float().mean()) > 8.0
    # The cache hands out copies: editing one does not change the next.
    perms[0] = 0
    assert len(torch.unique(jigsaw_permutations(9, 100, seed=0), dim=0)) == 100


def test_each_pick_is_the_farthest_remaining_candidate():
    # Brute force over all 24 orderings of 4 tiles: every permutation after the first has the
    # largest possible distance to its nearest predecessor, ties broken by the summed one.
    perms = jigsaw_permutations(4, 12, seed=3).tolist()
    everything = [list(p) for p in itertools.permutations(range(4))]

    def dist(a, b):
        return sum(x != y for x, y in zip(a, b))

    for k in range(1, len(perms)):
        chosen = perms[:k]

        def score(p, chosen=chosen):
            return (min(dist(p, c) for c in chosen), sum(dist(p, c) for c in chosen))

        best = max(score(p) for p in everything if p not in chosen)
        assert score(perms[k]) == best


def test_all_orderings_of_a_small_grid_and_sampled_candidates_of_a_large_one():
    every = jigsaw_permutations(4, 24)
    assert len(torch.unique(every, dim=0)) == 24
    large = jigsaw_permutations(16, 20, seed=0)
    assert torch.equal(large, jigsaw_permutations(16, 20, seed=0))
    assert len(torch.unique(large, dim=0)) == 20 and int(hamming(large).min()) >= 12


# -- tiles -----------------------------------------------------------------------------------


def test_tiles_and_images_round_trip():
    x = torch.rand(2, 3, 6, 9)
    tiles = image_to_tiles(x, 3)
    assert tiles.shape == (2, 9, 3, 2, 3)
    assert torch.equal(tiles[1, 5], x[1, :, 2:4, 6:9])  # row 1, column 2
    assert torch.equal(tiles_to_image(tiles, 3), x)


def test_shuffled_tiles_reassemble_under_the_inverse_permutation():
    method = make(size=9, grid=3, num_permutations=20, tile_jitter=0)
    images = torch.rand(16, 1, 9, 9)
    tiles, labels = method.make_puzzles(images, torch.Generator().manual_seed(0))
    assert tiles.shape == (16, 9, 1, 3, 3) and labels.shape == (16,)
    assert 0 <= int(labels.min()) and int(labels.max()) < 20 and len(set(labels.tolist())) > 5
    inverse = method.permutations[labels].argsort(dim=1)
    ordered = tiles[torch.arange(16).unsqueeze(1), inverse]
    assert torch.equal(tiles_to_image(ordered, 3), images)
    # Puzzle position k holds tile permutations[label, k].
    cells = image_to_tiles(images, 3)
    k = 4
    assert torch.equal(tiles[0, k], cells[0, method.permutations[labels[0], k]])


def test_jittered_tiles_are_windows_of_their_cells():
    # 28 px and a 3x3 grid: a 27x27 region at offset 0 or 1, 9x9 cells, 7x7 tiles.
    method = make(size=28, grid=3, num_permutations=10, tile_jitter=None)
    n = 32
    ids = torch.arange(n * 28 * 28, dtype=torch.float32).view(n, 1, 28, 28)
    tiles, labels = method.make_puzzles(ids, torch.Generator().manual_seed(2))
    assert tiles.shape == (n, 9, 1, 7, 7)
    ordered = tiles[torch.arange(n).unsqueeze(1), method.permutations[labels].argsort(dim=1)]
    pixel = ordered[:, :, 0, 0, 0].long() % (28 * 28)
    rows, cols = pixel // 28, pixel % 28
    cell_rows = torch.arange(9) // 3 * 9
    cell_cols = torch.arange(9) % 3 * 9
    dy, dx = rows - cell_rows, cols - cell_cols  # region offset + jitter, 0 .. 1 + 2
    assert int(dy.min()) >= 0 and int(dy.max()) <= 3 and int(dx.min()) >= 0 and int(dx.max()) <= 3
    assert int(dy.max()) == 3 and int(dx.max()) == 3  # the extremes are reached
    # Each tile is a contiguous 7x7 window of the image it came from.
    top_left = ordered[:, :, 0, :1, :1]
    window = top_left + torch.arange(7).view(7, 1) * 28 + torch.arange(7)
    assert torch.equal(ordered[:, :, 0], window)


def test_normalize_tiles_gives_each_tile_zero_mean_unit_variance():
    method = make(size=8, normalize_tiles=True)
    tiles, _ = method.make_puzzles(torch.rand(4, 1, 8, 8))
    flat = tiles.flatten(2)
    torch.testing.assert_close(flat.mean(2), torch.zeros(4, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(2), torch.ones(4, 4), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "size, grid, jitter, expected",
    [
        (28, 3, None, (9, 7, 2)),
        (8, 2, None, (4, 3, 1)),
        (8, 3, None, (2, 2, 0)),
        (28, 3, 0, (9, 9, 0)),
        (32, 4, 5, (8, 3, 5)),
    ],
)
def test_tile_geometry(size, grid, jitter, expected):
    g = tile_geometry(size, size, grid, jitter)
    assert (g.cell_height, g.tile_height, g.jitter_height) == expected
    assert (g.cell_width, g.tile_width, g.jitter_width) == expected


# -- training --------------------------------------------------------------------------------


def structured_images(n=16, size=8, seed=0):
    # Smooth ramps: a tile's content tells where in the image it was, so the task is learnable.
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    x = ramp.view(1, 1, size, 1) * 0.6 + ramp.view(1, 1, 1, size) * 0.3
    return (x + 0.1 * torch.rand(n, 1, size, size, generator=g)).clamp(0, 1)


def test_loss_falls_and_accuracy_is_logged():
    losses, accuracies = train_and_record(
        make(tile_jitter=0), structured_images(), 25, "jigsaw_accuracy"
    )
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5, losses
    assert max(accuracies[-3:]) > 0.5, accuracies


def test_state_dict_round_trip_resumes_exactly():
    images = structured_images()
    method = make(seed=0)
    opt = torch.optim.SGD(method.parameters(), lr=0.05)
    for _ in range(2):
        out = method.training_step(Batch([images]))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    # Another seed: different weights and a different permutation set until loaded.
    fresh = make(seed=5, permutation_seed=9)
    assert not torch.equal(fresh.permutations, method.permutations)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.permutations, method.permutations)
    torch.manual_seed(7)
    expected = method.training_step(Batch([images]))
    torch.manual_seed(7)
    got = fresh.training_step(Batch([images]))
    assert torch.equal(expected["loss"], got["loss"])
    assert torch.equal(expected["jigsaw_accuracy"], got["jigsaw_accuracy"])


def test_small_cnn_trains_on_tiles_and_embeds_whole_images():
    torch.manual_seed(0)
    backbone = SmallCNN(1, embedding_dim=16, width=8, pool_size=2)  # the 28 px layout
    hp = {**HPARAMS, "tile_dim": 8, "head_hidden_dim": 16, "num_permutations": 10}
    method = Jigsaw(
        backbone, **jigsaw_heads(64, hp), grid=3, num_permutations=10, input_shape=(1, 28, 28)
    )
    out = method.training_step(Batch([torch.rand(4, 1, 28, 28)]))
    out["loss"].backward()
    method.eval()
    features = method.embed(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8))
    assert features.shape == (3, 64) and torch.isfinite(features).all()


def test_heads_builder():
    heads = jigsaw_heads(512, HPARAMS)
    assert heads["tile_head"](torch.randn(4, 512)).shape == (4, 128)
    assert heads["classification_head"].input_dim == 9 * 128
    assert heads["classification_head"].output_dim == 100
    plain = jigsaw_heads(32, {**HPARAMS, "tile_dim": None, "grid": 2, "num_permutations": 5})
    assert set(plain) == {"classification_head"} and plain["classification_head"].input_dim == 128
    with pytest.raises(ValueError, match="tile_dim"):
        jigsaw_heads(32, {**HPARAMS, "tile_dim": 0})


def test_recipe_gives_one_full_size_view():
    views = jigsaw_views(28, mean=[0.5], std=[0.3])(
        torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    )
    assert len(views) == 1 and views[0].shape == (4, 1, 28, 28)


# -- errors ----------------------------------------------------------------------------------


def conv_backbone():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"grid": 1}, ValueError, "grid"),
        ({"grid": 2.0}, TypeError, "grid"),
        ({"grid": 5, "input_shape": (1, 8, 8)}, ValueError, "does not fit"),
        ({"grid": 3, "tile_jitter": 3, "input_shape": (1, 12, 12)}, ValueError, "tile_jitter"),
        ({"tile_jitter": -1}, ValueError, "tile_jitter"),
        ({"grid": 2, "num_permutations": 25}, ValueError, "24 orderings"),
        ({"num_permutations": 1}, ValueError, "num_permutations"),
        ({"grid": 3, "num_permutations": 1001}, ValueError, "num_permutations must be <= 1000"),
        ({"permutation_seed": -1}, ValueError, "permutation_seed"),
        ({"normalize_tiles": "yes"}, TypeError, "normalize_tiles"),
    ],
)
def test_construction_errors(kwargs, error, match):
    kwargs = {"grid": 2, "num_permutations": 10, **kwargs}
    with pytest.raises(error, match=match):
        Jigsaw(conv_backbone(), nn.Linear(16, kwargs["num_permutations"]), **kwargs)


def test_head_errors():
    from metricssl.models.heads import ProjectionHead

    with pytest.raises(ValueError, match="num_permutations=10"):
        Jigsaw(conv_backbone(), ProjectionHead(16, 8, 7), grid=2, num_permutations=10)
    with pytest.raises(TypeError, match="classification_head"):
        Jigsaw(conv_backbone(), None, grid=2, num_permutations=10)
    with pytest.raises(TypeError, match="tile_head"):
        Jigsaw(conv_backbone(), nn.Linear(16, 10), tile_head="mlp", grid=2, num_permutations=10)
    # A head built for another grid is refused at the step with the arithmetic spelled out.
    method = Jigsaw(conv_backbone(), ProjectionHead(36, 8, 10), grid=2, num_permutations=10)
    with pytest.raises(ValueError, match="4 x 4 = 16"):
        method.training_step(Batch([torch.rand(4, 1, 8, 8)]))
    # Without input_shape the tiling is checked at the first step.
    method = Jigsaw(conv_backbone(), nn.Linear(36, 10), grid=3, num_permutations=10)
    with pytest.raises(ValueError, match="does not fit"):
        method.training_step(Batch([torch.rand(4, 1, 5, 5)]))


def test_num_permutations_may_reach_the_factorial_of_the_tiles():
    method = Jigsaw(conv_backbone(), nn.Linear(16, 24), grid=2, num_permutations=24)
    assert len(torch.unique(method.permutations, dim=0)) == math.factorial(4)


def test_registry_entry_builds_for_28_pixels():
    full = build_method("jigsaw", (1, 28, 28), mean=[0.286], std=[0.353])
    assert full.classification_head.input_dim == 9 * 128 and full.permutations.shape == (100, 9)
    with pytest.raises(ValueError, match="does not fit"):
        build_method("jigsaw", (1, 5, 5))
