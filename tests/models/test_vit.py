"""VisionTransformer: shapes for 28x28x1 and 32x32x3, gradients, errors naming the argument,
state_dict round trips, other input sizes; the registry's vit_tiny/vit_small with every method,
from Python and the command line."""

import io
import math

import pytest
import torch

from metricssl.cli import main
from metricssl.core.validation import ArgumentError
from metricssl.models.embedder import infer_num_features
from metricssl.models.vit import (
    VisionTransformer,
    default_patch_size,
    patchify,
    sincos_position_embedding,
    unpatchify,
    vit_small,
    vit_tiny,
)
from metricssl.ssl.checkpoint import load_checkpoint
from metricssl.ssl.registry import BACKBONES, METHODS, build_backbone, cli_choices
from metricssl.ssl.trainer import Trainer
from tests.ssl.test_trainer import SMALL, tiny_data

# A narrow, shallow ViT for the tests that do not check the named widths.
TINY = {"width": 16, "depth": 2, "heads": 2}


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("factory, width", [(vit_tiny, 192), (vit_small, 384)])
def test_named_sizes_give_the_class_token_features(factory, width, shape):
    channels, size, _ = shape
    net = factory(image_size=size, patch_size=4, in_channels=channels, depth=1)
    out = net(torch.randn(3, *shape))
    assert out.shape == (3, width)
    assert net.num_features == width == infer_num_features(net, shape)
    assert net.grid == (size // 4, size // 4)
    assert net.pos_embed.shape == (1, 1 + (size // 4) ** 2, width)


def test_named_layouts():
    for factory, width, heads in [(vit_tiny, 192, 3), (vit_small, 384, 6)]:
        net = factory(image_size=32, patch_size=4)
        assert len(net.blocks) == 12
        assert net.blocks[0].attn.heads == heads
        assert net.blocks[0].mlp[0].out_features == 4 * width  # MLP ratio 4
        assert isinstance(net.blocks[0].mlp[1], torch.nn.GELU)
    # ViT-Ti/16 at 224 px: 5.7 M parameters in DeiT's table, less its 192 * 1000 + 1000 head.
    params = sum(p.numel() for p in vit_tiny().parameters())
    assert math.isclose(params, 5.717e6 - 193_000, rel_tol=0.01)


def test_output_is_the_normalised_class_token():
    net = VisionTransformer(image_size=8, patch_size=4, in_channels=1, **TINY).eval()
    x = torch.randn(2, 1, 8, 8)
    tokens = net.patch_embed(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([net.cls_token.expand(2, -1, -1), tokens], dim=1) + net.pos_embed
    expected = net.norm(net.blocks(tokens))
    torch.testing.assert_close(net(x), expected[:, 0])
    # Attention mixes the patches into the class token: changing one patch changes the output.
    y = x.clone()
    y[..., 4:, 4:] += 1.0
    assert not torch.allclose(net(x), net(y))


def test_gradients_reach_every_parameter():
    net = VisionTransformer(image_size=28, patch_size=4, in_channels=1, **TINY)
    images = torch.randn(4, 1, 28, 28, requires_grad=True)
    net(images).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert images.grad.abs().sum() > 0


def test_other_input_sizes_resize_the_position_embeddings():
    net = VisionTransformer(image_size=28, patch_size=4, in_channels=1, **TINY).eval()
    # DINO's 12 px local crops (a 3x3 grid) and Jigsaw's 9 px tiles (2x2, one row left out).
    assert net(torch.randn(2, 1, 12, 12)).shape == (2, 16)
    assert net(torch.randn(2, 1, 9, 9)).shape == (2, 16)
    resized = net._position_embedding((3, 3))
    assert resized.shape == (1, 10, 16)
    torch.testing.assert_close(resized[:, 0], net.pos_embed[:, 0])  # the class token's own
    assert net._position_embedding(net.grid) is net.pos_embed
    with pytest.raises(ValueError, match="patch_size=4"):
        net(torch.randn(2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        net(torch.randn(2, 3, 28, 28))


def test_non_square_images():
    net = VisionTransformer(image_size=(16, 24), patch_size=4, in_channels=3, **TINY)
    assert net.grid == (4, 6)
    assert net(torch.randn(2, 3, 16, 24)).shape == (2, 16)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"image_size": 30, "patch_size": 4}, ArgumentError, "image_size"),
        ({"image_size": (28, 30), "patch_size": 4}, ArgumentError, "patch_size"),
        ({"width": 20, "heads": 3}, ArgumentError, "heads"),
        ({"image_size": "28"}, TypeError, "image_size"),
        ({"image_size": (28,)}, TypeError, "image_size"),
        ({"image_size": (28, 0)}, ArgumentError, r"image_size\[1\]"),
        ({"patch_size": 0}, ArgumentError, "patch_size"),
        ({"patch_size": 4.0}, TypeError, "patch_size"),
        ({"in_channels": 0}, ArgumentError, "in_channels"),
        ({"width": 0}, ArgumentError, "width"),
        ({"depth": 0}, ArgumentError, "depth"),
        ({"heads": True}, TypeError, "heads"),
        ({"mlp_ratio": 0}, ArgumentError, "mlp_ratio"),
        ({"dropout": 1.0}, ArgumentError, "dropout"),
        ({"dropout": -0.1}, ArgumentError, "dropout"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, name):
    args = {"image_size": 28, "patch_size": 4, "in_channels": 1, **TINY, **kwargs}
    with pytest.raises(error, match=name):
        VisionTransformer(**args)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = VisionTransformer(image_size=32, patch_size=4, in_channels=3, **TINY).eval()
    torch.manual_seed(1)
    b = VisionTransformer(image_size=32, patch_size=4, in_channels=3, **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a(x), b(x))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_dropout_is_off_in_eval_mode():
    net = VisionTransformer(image_size=8, patch_size=4, in_channels=1, dropout=0.5, **TINY)
    x = torch.randn(2, 1, 8, 8)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


# -- the pieces MAE runs: patches, tokens of some patches, fixed position embeddings ---------


@pytest.mark.parametrize("shape, p", [((2, 1, 8, 8), 4), ((3, 3, 8, 12), 2), ((1, 2, 6, 6), 1)])
def test_patchify_and_unpatchify_round_trip(shape, p):
    x = torch.randn(shape)
    patches = patchify(x, p)
    rows, cols = shape[2] // p, shape[3] // p
    assert patches.shape == (shape[0], rows * cols, p * p * shape[1])
    assert torch.equal(unpatchify(patches, p, (rows, cols)), x)
    # Patch j is the j-th of the grid in row-major order, its pixels row by row, channels last.
    r, c = divmod(rows * cols - 1, cols)
    corner = x[1 % shape[0], :, r * p : (r + 1) * p, c * p : (c + 1) * p]
    assert torch.equal(patches[1 % shape[0], -1], corner.permute(1, 2, 0).flatten())


def test_patch_tokens_follow_patchify_order_and_the_pieces_make_forward():
    torch.manual_seed(0)
    net = VisionTransformer(image_size=8, patch_size=4, in_channels=3, **TINY).eval()
    x = torch.randn(2, 3, 8, 8)
    tokens = net.patch_tokens(x)
    # The strided convolution is a linear map of each patch in patchify's layout.
    weight = net.patch_embed.weight.permute(0, 2, 3, 1).flatten(1)
    by_hand = patchify(x, 4) @ weight.T + net.patch_embed.bias + net.pos_embed[:, 1:]
    torch.testing.assert_close(tokens, by_hand)
    whole = torch.cat([net.class_tokens(2), tokens], dim=1)
    torch.testing.assert_close(net.encode(whole)[:, 0], net(x), rtol=0, atol=0)


def test_sincos_position_embedding_formula():
    table = sincos_position_embedding(8, (2, 3))[0]
    assert table.shape == (7, 8) and torch.equal(table[0], torch.zeros(8))
    omega = 1.0 / 10000 ** (torch.arange(2, dtype=torch.float64) / 2)
    for j in range(6):
        r, c = divmod(j, 3)
        expected = torch.cat(
            [(r * omega).sin(), (r * omega).cos(), (c * omega).sin(), (c * omega).cos()]
        )
        torch.testing.assert_close(table[1 + j], expected.float())
    assert sincos_position_embedding(8, (2, 3), dtype=torch.float64).dtype == torch.float64


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: patchify(torch.zeros(1, 1, 6, 6), 4), ValueError, "patch_size"),
        (lambda: patchify(torch.zeros(6, 6), 2), ValueError, "images"),
        (lambda: patchify(torch.zeros(1, 1, 4, 4), 0), ArgumentError, "patch_size"),
        (lambda: unpatchify(torch.zeros(1, 4, 4), 2, (2, 3)), ValueError, "grid"),
        (lambda: unpatchify(torch.zeros(1, 4, 5), 2, (2, 2)), ValueError, "patch_size"),
        (lambda: sincos_position_embedding(6, (2, 2)), ArgumentError, "width=6"),
    ],
)
def test_bad_patch_arguments_are_named(call, error, name):
    with pytest.raises(error, match=name):
        call()


# -- the registry, the Trainer and the command line ----------------------------------------


def test_registry_builds_for_the_data_shape():
    assert {"vit_tiny", "vit_small"} <= set(BACKBONES) and cli_choices()["backbone"] == BACKBONES
    net = build_backbone("vit_tiny", (1, 28, 28), depth=1)
    assert (net.image_size, net.patch_size, net.in_channels) == ((28, 28), 4, 1)
    assert net.num_features == 192 and len(net.blocks) == 1
    net = build_backbone("vit_small", (3, 96, 128), depth=1)
    assert (net.image_size, net.patch_size, net.in_channels) == ((96, 128), 16, 3)
    assert net.num_features == 384
    net = build_backbone("vit_tiny", (3, 32, 32), patch_size=8, depth=1)
    assert net.grid == (4, 4)
    with pytest.raises(ArgumentError, match="patch_size=4"):
        build_backbone("vit_tiny", (1, 30, 30))
    assert [default_patch_size(s) for s in (8, 28, 32, 64, 65, (32, 96), 224)] == [
        4,
        4,
        4,
        4,
        16,
        16,
        16,
    ]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_with_a_vit(name, tmp_path):
    trainer = Trainer(
        method=name,
        dataset=tiny_data(n=48, shape=(1, 28, 28)),
        backbone="vit_tiny",
        backbone_kwargs=TINY,
        hparams=SMALL[name],
        epochs=1,
        batch_size=16,
        steps_per_epoch=1,
        out=tmp_path,
        progress=False,
        knn_k=5,
    )
    assert isinstance(trainer.method.backbone, VisionTransformer)
    assert math.isfinite(trainer.fit()["loss"])


def test_simclr_vit_tiny_resumes_exactly_and_reloads(tmp_path):
    def make(out):
        return Trainer(
            method="simclr",
            dataset=tiny_data(n=48, shape=(3, 32, 32)),
            backbone="vit_tiny",
            backbone_kwargs={"depth": 2},
            epochs=2,
            batch_size=16,
            out=out,
            progress=False,
            knn_k=5,
        )

    straight = make(tmp_path / "a")
    final = straight.fit()
    assert math.isfinite(final["loss"])
    make(tmp_path / "b").fit(epochs=1)
    resumed = make(tmp_path / "b")  # resume="auto" picks up last.pt
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    restored, _ = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    backbone = restored.backbone.eval()
    assert isinstance(backbone, VisionTransformer) and len(backbone.blocks) == 2
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(backbone(x), straight.method.backbone.eval()(x))


def test_command_line_trains_a_vit(tmp_path, capsys):
    argv = ["train", "--method", "simclr", "--dataset", "digits", "--backbone", "vit_tiny"]
    argv += ["--set", "backbone_kwargs.depth=1", "--out", str(tmp_path), "--json"]
    argv += ["--epochs", "1", "--batch-size", "32", "--steps-per-epoch", "1", "--device", "cpu"]
    assert main(argv) == 0
    capsys.readouterr()
    restored, _ = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert isinstance(restored.backbone, VisionTransformer)
    assert restored.backbone.image_size == (8, 8) and restored.backbone.patch_size == 4
