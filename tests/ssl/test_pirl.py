"""PIRL: shuffled tiles, the two-term bank loss, invariance, bad input."""

import copy

import pytest
import torch
from torch import nn

from metricssl.models.heads import ProjectionHead
from metricssl.ssl.datasets import ImageData
from metricssl.ssl.jigsaw import cut_tiles, image_to_tiles
from metricssl.ssl.method import Batch
from metricssl.ssl.pirl import PIRL, pirl_heads
from metricssl.ssl.registry import build_method

SMALL = {"embedding_dim": 16, "grid": 2, "tile_dim": 8, "num_negatives": 16, "tile_jitter": 0}


def conv_backbone():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def build(**overrides):
    torch.manual_seed(0)
    hp = {**SMALL, **overrides}
    heads = pirl_heads(8, hp)
    args = {k: v for k, v in hp.items() if k not in ("tile_dim", "proj_hidden_dim")}
    return PIRL(conv_backbone(), **heads, num_samples=32, input_shape=(1, 8, 8), **args)


def test_shuffled_tiles_are_each_images_own_tiles_in_some_order():
    method = build()
    images = torch.rand(5, 1, 8, 8)
    shuffled = method.shuffled_tiles(images)
    cells = image_to_tiles(images, 2)  # no jitter: the tiles are the cells
    assert shuffled.shape == cells.shape
    for i in range(5):
        ours = sorted(t.flatten().tolist() for t in shuffled[i])
        assert ours == sorted(t.flatten().tolist() for t in cells[i])


def test_cut_tiles_keeps_row_major_order_without_jitter():
    x = torch.arange(64.0).view(1, 1, 8, 8)
    torch.testing.assert_close(cut_tiles(x, 2, tile_jitter=0), image_to_tiles(x, 2))


def test_training_raises_invariance_and_lowers_the_loss():
    method = build()
    # Each image its own brightness: a pooled backbone can tell them apart from any tile
    # (i.i.d. noise images all have the same statistics).
    g = torch.Generator().manual_seed(1)
    levels = torch.linspace(0, 1, 32).view(32, 1, 1, 1)
    images = 0.8 * levels + 0.2 * torch.rand(32, 1, 8, 8, generator=g)
    views = [images, images]
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    outs = []
    for _ in range(30):
        out = method.training_step(Batch(views, indices=torch.arange(32)))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        outs.append({k: float(v.detach()) for k, v in out.items()})
    assert outs[-1]["loss"] < outs[0]["loss"]
    assert outs[-1]["invariance"] > outs[0]["invariance"] + 0.2, outs


def test_the_bank_follows_the_whole_image_embedding():
    method = build(memory_momentum=0.0)
    views = [torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)]
    method.training_step(Batch(views, indices=torch.tensor([3, 5, 7, 9])))
    with torch.no_grad():
        f = nn.functional.normalize(method.projection_head(method.backbone(views[0])), dim=1)
    torch.testing.assert_close(method.memory.bank[[3, 5, 7, 9]], f)


def test_loss_weight_one_uses_only_the_jigsaw_term():
    method = build(loss_weight=1.0)
    views = [torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)]
    method.training_step(Batch(views, indices=torch.arange(4)))["loss"].backward()
    # The whole-image head only feeds the bank and the f-term, which has weight 0.
    assert method.projection_head.weight.grad.abs().sum() == 0
    assert method.jigsaw_head.weight.grad.abs().sum() > 0


def test_registry_builds_pirl_for_28px_images():
    method = build_method("pirl", (1, 28, 28), num_samples=100)
    assert isinstance(method, PIRL) and method.grid == 3
    views = method.make_views(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
    out = method.training_step(Batch(views, indices=torch.arange(4)))
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"grid": 5}, ValueError, "grid=5 does not fit"),
        ({"loss_weight": 1.5}, ValueError, "loss_weight"),
        ({"num_negatives": 0}, ValueError, "num_negatives"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"proj_hidden_dim": -1}, ValueError, "proj_hidden_dim"),
        ({"bank_init": "zeros"}, ValueError, "bank_init"),
    ],
)
def test_bad_arguments_are_refused_at_construction(overrides, error, message):
    with pytest.raises(error, match=message):
        build(**overrides)


def test_missing_indices_and_bad_heads_are_refused():
    method = build()
    views = [torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)]
    with pytest.raises(ValueError, match="indices"):
        method.training_step(Batch(views))
    with pytest.raises(TypeError, match="tile_head"):
        PIRL(conv_backbone(), nn.Linear(8, 16), "linear", nn.Linear(32, 16), num_samples=8)
    with pytest.raises(ValueError, match="num_samples"):
        build_method("pirl", (1, 28, 28))


def test_tiles_do_not_move_the_backbones_batchnorm_statistics():
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    hp = {k: v for k, v in SMALL.items() if k != "tile_dim"}
    method = PIRL(backbone, **pirl_heads(8, SMALL), num_samples=32, **hp)
    whole_views_only = copy.deepcopy(backbone).train()
    # Tiles far brighter than the whole views: any leak would show in the running mean.
    views = [torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8) * 4 + 3]
    method.training_step(Batch(views, indices=torch.arange(6)))
    whole_views_only(views[0])
    torch.testing.assert_close(backbone[1].running_mean, whole_views_only[1].running_mean)
    torch.testing.assert_close(backbone[1].running_var, whole_views_only[1].running_var)
    assert backbone[1].num_batches_tracked == 1


def test_heads_are_linear_or_two_layer_mlps():
    linear = pirl_heads(8, {**SMALL, "proj_hidden_dim": 0})
    assert isinstance(linear["projection_head"], nn.Linear)
    mlp = pirl_heads(8, {**SMALL, "proj_hidden_dim": 32})
    for name, width in (("projection_head", 8), ("jigsaw_head", 4 * 8)):
        head = mlp[name]
        assert isinstance(head, ProjectionHead) and head.num_layers == 2
        assert (head.input_dim, head.hidden_dim, head.output_dim) == (width, 32, 16)
    assert isinstance(mlp["tile_head"], nn.Linear)  # each tile: a linear map, as in the paper


def test_bank_can_start_from_the_networks_own_features():
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    hp = {k: v for k, v in SMALL.items() if k != "tile_dim"}
    method = PIRL(backbone, **pirl_heads(8, SMALL), num_samples=32, bank_init="features", **hp)
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    random_rows = method.memory.bank.clone()
    method.on_epoch_start(0, ImageData(images, None))
    assert backbone[1].num_batches_tracked == 0  # the pass left the running statistics alone
    with torch.no_grad():  # training-mode BatchNorm over the whole (single) batch
        f = method.projection_head(backbone(method.clean_images(images)))
    torch.testing.assert_close(method.memory.bank, nn.functional.normalize(f, dim=1))
    # Only a fresh run starts from the features; later epochs (and resumed runs) keep the bank.
    filled = method.memory.bank.clone()
    method.on_epoch_start(1, ImageData(images.flip(0), None))
    assert torch.equal(method.memory.bank, filled)
    assert not torch.allclose(filled, random_rows)
    # The default keeps the papers' random start.
    default = build()
    before = default.memory.bank.clone()
    default.on_epoch_start(0, ImageData(images, None))
    assert torch.equal(default.memory.bank, before)
