"""MAE: random masking per image, the encoder on the visible patches only, the loss on the
hidden patches against a hand-written formula, norm_pix_loss, errors naming the argument, the
Trainer and command line with the default vit_tiny, and half batches under 2-process DDP."""

import json
import math

import pytest
import torch

from metricssl.cli import main
from metricssl.core.validation import ArgumentError
from metricssl.models.small_cnn import SmallCNN
from metricssl.models.vit import VisionTransformer, sincos_position_embedding
from metricssl.ssl.checkpoint import load_checkpoint
from metricssl.ssl.mae import MAE, MAEConfig, MAEDecoder, mae_loss, mae_views
from metricssl.ssl.method import Batch
from metricssl.ssl.registry import METHODS
from metricssl.ssl.trainer import Trainer
from tests.gloo import check_half_batches_match_the_whole_batch
from tests.ssl.tiny_runs import tiny_trainer

SMALL = {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2}
TINY_VIT = {"width": 16, "depth": 1, "heads": 2}


def tiny_vit(side=8, patch=2, channels=1, dtype=torch.float32):
    return VisionTransformer(side, patch, channels, **TINY_VIT).to(dtype)


def build(side=8, patch=2, channels=1, dtype=torch.float32, **overrides):
    torch.manual_seed(0)
    method = MAE(tiny_vit(side, patch, channels), **{**SMALL, **overrides})
    return method.to(dtype)


def hand_patch(image, row, col, p):
    """Patch (row, col) of one (C, H, W) image, its pixels row by row, channels last."""
    return image[:, row * p : (row + 1) * p, col * p : (col + 1) * p].permute(1, 2, 0).flatten()


def hand_loss(images, prediction, masked, p, norm_pix):
    """The mean over the hidden patches of the mean squared error of their pixels."""
    n, _, h, w = images.shape
    cols = w // p
    errors = []
    for i in range(n):
        for j in range(masked.shape[1]):
            if not masked[i, j]:
                continue
            target = hand_patch(images[i], j // cols, j % cols, p)
            if norm_pix:
                mean = target.sum() / target.numel()
                var = ((target - mean) ** 2).sum() / (target.numel() - 1)
                target = (target - mean) / math.sqrt(var + 1e-6)
            errors.append(((prediction[i, j] - target) ** 2).mean())
    return torch.stack(errors).mean()


def test_masks_hide_the_same_count_per_image_at_different_places_and_follow_the_seed():
    method = build(side=16, patch=2)  # 64 patches, 16 visible
    patches = torch.randn(6, 64, 4)
    torch.manual_seed(3)
    order, restore = method.random_order(patches)
    keep = method.visible_patches(64)
    assert keep == 16
    masked = restore >= keep
    assert masked.sum(dim=1).tolist() == [48] * 6
    assert torch.equal(order.sort(dim=1).values, torch.arange(64).expand(6, -1))  # permutations
    assert torch.equal(restore.gather(1, order), torch.arange(64).expand(6, -1))
    assert len({tuple(m.tolist()) for m in masked}) == 6  # each image its own mask
    torch.manual_seed(3)
    again, _ = method.random_order(patches)
    assert torch.equal(order, again)
    assert not torch.equal(method.random_order(patches)[0], order)  # the stream moved on


def test_the_papers_visible_count_and_ratios_leaving_nothing_to_do_are_refused():
    method = build(mask_ratio=0.75)
    assert [method.visible_patches(n) for n in (4, 49, 64)] == [1, 12, 16]
    with pytest.raises(ValueError, match="mask_ratio=0.9 leaves 0 of the 4 patches"):
        build(mask_ratio=0.9).visible_patches(4)
    with pytest.raises(ValueError, match="mask_ratio=1e-20 leaves 4 of the 4"):
        build(mask_ratio=1e-20).visible_patches(4)  # none hidden
    with pytest.raises(ValueError, match="mask_ratio"):
        build(side=4, mask_ratio=0.9).training_step(Batch([torch.randn(2, 1, 4, 4)]))


@pytest.mark.parametrize("norm_pix", [True, False])
def test_the_step_loss_is_the_error_on_the_hidden_patches(norm_pix):
    method = build(side=8, patch=2, channels=3, dtype=torch.float64, norm_pix_loss=norm_pix)
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    predictions = []
    method.decoder.register_forward_hook(lambda m, args, out: predictions.append(out))
    torch.manual_seed(5)
    loss = method.training_step(Batch([images]))["loss"]
    torch.manual_seed(5)
    _, restore = method.random_order(torch.empty(3, 16, 12))
    masked = restore >= method.visible_patches(16)
    expected = hand_loss(images, predictions[0].detach(), masked, 2, norm_pix)
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    for module in (method.backbone.patch_embed, method.decoder.predict):
        assert module.weight.grad.abs().sum() > 0


def test_mae_loss_against_the_formula_and_only_on_masked_patches():
    g = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 5, 6, dtype=torch.float64, generator=g)
    target = torch.randn(2, 5, 6, dtype=torch.float64, generator=g)
    masked = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    loss = mae_loss(prediction, target, masked, norm_pix_loss=False)
    rows = [((prediction[i, j] - target[i, j]) ** 2).mean() for i, j in masked.nonzero()]
    torch.testing.assert_close(loss, torch.stack(rows).mean())
    changed = prediction.clone()
    changed[~masked] += 10.0  # the visible patches' predictions do not count
    assert torch.equal(mae_loss(changed, target, masked, norm_pix_loss=False), loss)
    # norm_pix_loss: each target patch standardised by its own (unbiased) variance.
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    normed = (target - mean) / (var + 1e-6).sqrt()
    torch.testing.assert_close(
        mae_loss(prediction, target, masked), mae_loss(prediction, normed, masked, False)
    )
    # A shift and scale of a patch's pixels leave the normalised target unchanged.
    torch.testing.assert_close(
        mae_loss(prediction, 3 * target + 7, masked),
        mae_loss(prediction, target, masked),
        rtol=1e-5,  # up to the 1e-6 added to the variance
        atol=0,
    )


def test_the_encoder_sees_only_the_visible_patches():
    method = build(side=8, patch=2)
    images = torch.randn(2, 1, 8, 8)
    encoded = []
    method.backbone.norm.register_forward_hook(lambda m, args, out: encoded.append(out))

    def step(x):
        torch.manual_seed(7)
        method.training_step(Batch([x]))
        return encoded[-1]

    base = step(images)
    assert base.shape == (2, 1 + 4, 16)  # the class token and 4 of 16 patches
    torch.manual_seed(7)
    order, _ = method.random_order(torch.empty(2, 16, 4))
    hidden, shown = int(order[0, -1]), int(order[0, 0])

    def perturbed(patch):
        x = images.clone()
        r, c = divmod(patch, 4)
        x[0, :, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] += 5.0
        return x

    assert torch.equal(step(perturbed(hidden)), base)
    assert not torch.allclose(step(perturbed(shown))[0], base[0])


def test_the_step_gives_the_decoder_mask_tokens_at_the_hidden_patches():
    method = build(side=8, patch=2)
    seen = []
    method.decoder.blocks.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    images = torch.randn(3, 1, 8, 8)
    torch.manual_seed(2)
    method.training_step(Batch([images]))
    torch.manual_seed(2)
    _, restore = method.random_order(torch.empty(3, 16, 4))
    masked = restore >= method.visible_patches(16)
    pos = sincos_position_embedding(16, (4, 4))[0, 1:]
    tokens = seen[0][:, 1:]
    is_mask_token = (tokens - pos).sub(method.decoder.mask_token[0]).abs().amax(-1) < 1e-6
    assert torch.equal(is_mask_token, masked)


def test_decoder_puts_tokens_back_in_grid_order():
    torch.manual_seed(0)
    decoder = MAEDecoder(encoder_width=8, patch_dim=4, width=8, depth=1, heads=2)
    encoded = torch.randn(1, 3, 8)
    restore = torch.tensor([[2, 0, 3, 1]])  # patches 1 and 3 visible, in that order
    seen = []
    decoder.blocks.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    decoder(encoded, restore, (2, 2))
    tokens = seen[0][0]
    embedded = decoder.embed(encoded)[0]
    pos = sincos_position_embedding(8, (2, 2))[0]
    torch.testing.assert_close(tokens[0], embedded[0] + pos[0])  # class token
    torch.testing.assert_close(tokens[2], embedded[1] + pos[2])  # patch 1: first visible
    torch.testing.assert_close(tokens[4], embedded[2] + pos[4])  # patch 3: second visible
    for j in (0, 2):  # hidden patches: the mask token
        torch.testing.assert_close(tokens[1 + j], decoder.mask_token[0, 0] + pos[1 + j])


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(TypeError, match="backbone=SmallCNN"):
        MAE(SmallCNN(in_channels=1))
    with pytest.raises(ValueError, match="mask_ratio"):
        build(mask_ratio=1.0)
    with pytest.raises(ValueError, match="mask_ratio"):
        build(mask_ratio=0)
    with pytest.raises(ArgumentError, match="decoder_width=18 must be divisible by decoder_heads"):
        build(decoder_width=18, decoder_heads=4)
    with pytest.raises(ArgumentError, match="decoder_width=6 must be divisible by 4"):
        build(decoder_width=6, decoder_heads=2)
    with pytest.raises(ValueError, match="decoder_depth"):
        build(decoder_depth=0)
    with pytest.raises((TypeError, ValueError), match="norm_pix_loss"):
        build(norm_pix_loss="yes")
    with pytest.raises(ArgumentError, match="norm_pix_loss needs at least 2 pixels"):
        MAE(VisionTransformer(4, 1, 1, **TINY_VIT), **SMALL)
    MAE(VisionTransformer(4, 1, 1, **TINY_VIT), norm_pix_loss=False, **SMALL)  # allowed
    with pytest.raises(ValueError, match="masked must be a bool"):
        mae_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="one shape"):
        mae_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="needs 1 views"):
        build().training_step(Batch([]))


def test_embed_is_the_backbones_class_token_of_the_whole_image():
    method = build(side=8, patch=2)
    images = torch.rand(3, 1, 8, 8)
    method.eval()
    torch.testing.assert_close(method.embed(images), method.backbone(images))


def test_views_are_light_crops_and_flips():
    views = mae_views(8, mean=[0.5], std=[0.25])
    (view,) = views(torch.full((2, 1, 8, 8), 128, dtype=torch.uint8))
    # A constant image stays constant through crops and flips: no jitter, no blur.
    torch.testing.assert_close(view, torch.full_like(view, (128 / 255 - 0.5) / 0.25))


def test_registry_defaults_and_weight_decay_groups(tmp_path):
    spec = METHODS["mae"]
    assert spec.backbone == "vit_tiny" and spec.config is MAEConfig
    assert (spec.training.optimizer, spec.training.weight_decay) == ("adamw", 0.05)
    trainer = tiny_trainer(tmp_path, "mae", backbone_kwargs=TINY_VIT, hparams=SMALL, epochs=1)
    assert isinstance(trainer.method.backbone, VisionTransformer)  # no backbone named
    assert trainer.build_config["backbone"] == "vit_tiny"
    decayed, free = trainer.optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and free["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in free["params"])
    norm = trainer.method.backbone.norm.weight
    assert any(p is norm for p in free["params"])
    final = trainer.fit()
    assert math.isfinite(final["loss"]) and "knn_accuracy" in final


def test_a_cnn_backbone_is_refused_naming_it(tmp_path):
    with pytest.raises(TypeError, match="backbone"):
        Trainer(
            method="mae",
            dataset=(torch.zeros(40, 1, 8, 8, dtype=torch.uint8), None),
            backbone="small_cnn",
            out=tmp_path,
            progress=False,
        )


def test_command_line_trains_mae_with_a_vit_out_of_the_box(tmp_path, capsys):
    argv = ["train", "--method", "mae", "--dataset", "digits", "--out", str(tmp_path)]
    argv += ["--set", "backbone_kwargs.depth=1", "--set", "hparams.decoder_depth=1", "--json"]
    argv += ["--epochs", "1", "--batch-size", "32", "--steps-per-epoch", "1", "--device", "cpu"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert math.isfinite(out["metrics"]["loss"])
    restored, _ = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert isinstance(restored.backbone, VisionTransformer)
    resolved = json.loads((tmp_path / "resolved.json").read_text())
    assert resolved["backbone"] == "vit_tiny" and resolved["weight_decay"] == 0.05


class ContentMasked(MAE):
    """Masks drawn from the pixels (distinct random floats), so that each image gets the
    same mask whichever rank holds it: the check compares gradients, not random streams."""

    def mask_noise(self, patches):
        return patches.sum(dim=-1)


def ddp_method():
    torch.manual_seed(0)
    vit = VisionTransformer(4, 2, 1, **TINY_VIT)  # 4 patches, 2 visible
    return ContentMasked(vit, mask_ratio=0.5, **SMALL).double()


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    token = check_half_batches_match_the_whole_batch(
        tmp_path, ddp_method, lambda method: method.decoder.mask_token.detach().clone()
    )
    assert token.abs().sum() > 0
