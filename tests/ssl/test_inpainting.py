"""Context encoder: square masks, the masked loss, training, resume, the recipe, errors."""

import pytest
import torch
from torch import nn

from metricssl.models.decoder import ConvDecoder
from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.inpainting import (
    ContextEncoder,
    MaskedReconstructionLoss,
    masked_squared_errors,
    square_masks,
)
from metricssl.ssl.method import Batch
from metricssl.ssl.reconstruction import reconstruction_heads, reconstruction_views
from metricssl.ssl.registry import build_method
from tests.ssl.autoencoder_checks import (
    check_state_dict_round_trip,
    loss_before_and_after,
    plane_views,
)


def make(**kwargs):
    torch.manual_seed(0)
    backbone = SmallCNN(1, embedding_dim=16, width=4)
    kwargs = {"input_shape": (1, 8, 8), "decoder_width": 4, **kwargs}
    return ContextEncoder(backbone, **kwargs)


# -- masks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, fraction, box",
    [
        (8, 8, 0.25, (4, 4)),
        (16, 16, 0.5, (11, 11)),
        (8, 16, 0.25, (4, 8)),
        (28, 28, 0.25, (14, 14)),
    ],
)
def test_masks_are_one_box_of_the_requested_area(height, width, fraction, box):
    masks = square_masks(64, height, width, fraction, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, height, width) and masks.dtype == torch.bool
    area = masks.sum(dim=(1, 2, 3))
    assert (area == box[0] * box[1]).all()
    assert abs(box[0] * box[1] / (height * width) - fraction) < 0.05
    # One solid box: its bounding box has exactly its area.
    rows, cols = masks[:, 0].any(dim=2), masks[:, 0].any(dim=1)
    assert (rows.sum(1) == box[0]).all() and (cols.sum(1) == box[1]).all()
    assert ((rows.sum(1) * cols.sum(1)) == area).all()


def test_masks_differ_per_sample_and_cover_every_position():
    masks = square_masks(2000, 8, 8, 0.25, generator=torch.Generator().manual_seed(0))
    tops = masks[:, 0].any(dim=2).float().argmax(dim=1)
    lefts = masks[:, 0].any(dim=1).float().argmax(dim=1)
    positions = set(zip(tops.tolist(), lefts.tolist()))
    # A 4x4 box fits at 5 x 5 places in an 8x8 image: each is drawn.
    assert positions == {(t, left) for t in range(5) for left in range(5)}
    assert len(torch.unique(masks[:16].flatten(1), dim=0)) > 8


def test_masks_are_reproducible_with_a_generator():
    a = square_masks(8, 8, 8, 0.3, generator=torch.Generator().manual_seed(5))
    b = square_masks(8, 8, 8, 0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# -- the loss -------------------------------------------------------------------------------


def test_loss_counts_only_the_masked_region_when_context_weight_is_zero():
    torch.manual_seed(0)
    prediction, target = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    mask = square_masks(4, 8, 8, 0.25)
    loss = MaskedReconstructionLoss()
    base = loss(prediction, target, mask)
    changed_pred = torch.where(mask, prediction, prediction + torch.randn_like(prediction))
    changed_target = torch.where(mask, target, torch.randn_like(target))
    assert loss(changed_pred, target, mask) == base
    assert loss(prediction, changed_target, mask) == base
    # Inside the mask every pixel counts.
    assert loss(torch.where(mask, prediction + 1, prediction), target, mask) != base
    # With a context weight the outside counts too, and the value is the weighted sum.
    weighted = MaskedReconstructionLoss(context_weight=0.1)
    assert weighted(changed_pred, target, mask) != weighted(prediction, target, mask)
    error = (prediction - target).square()
    m = mask.expand_as(error)
    expected = error[m].mean() + 0.1 * error[~m].mean()
    torch.testing.assert_close(weighted(prediction, target, mask), expected)


def test_masked_squared_errors_value_and_input_errors():
    prediction = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[True, False], [False, True]]]])
    masked, context = masked_squared_errors(prediction, target, mask)
    assert masked.item() == pytest.approx((1 + 16) / 2)
    assert context.item() == pytest.approx((4 + 9) / 2)
    with pytest.raises(ValueError, match="target has"):
        masked_squared_errors(prediction, torch.zeros(1, 1, 2, 3), mask)
    with pytest.raises(TypeError, match="bool"):
        masked_squared_errors(prediction, target, mask.float())
    with pytest.raises(ValueError, match="mask must have shape"):
        masked_squared_errors(prediction, target, mask[:, :, :1])
    with pytest.raises(ValueError, match="context_weight"):
        MaskedReconstructionLoss(context_weight=-0.5)


# -- the method -----------------------------------------------------------------------------


def test_corrupt_fills_the_square_and_keeps_the_rest():
    method = make(fill_value=-2.0)
    images = plane_views(16)[0]
    masked, mask = method.corrupt(images, torch.Generator().manual_seed(0))
    assert (mask.sum(dim=(1, 2, 3)) == 16).all()
    assert (masked[mask.expand_as(masked)] == -2.0).all()
    assert torch.equal(masked[~mask.expand_as(masked)], images[~mask.expand_as(images)])


def test_backbone_never_sees_the_hidden_pixels_and_only_they_get_gradient():
    method = make()
    seen, predictions = [], []
    method.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))

    def keep(module, args, out):
        out.retain_grad()
        predictions.append(out)

    method.decoder_head.register_forward_hook(keep)
    images = plane_views(16)[0]
    changed = images.clone()
    torch.manual_seed(3)
    mask = method.corrupt(images)[1].expand_as(images)
    changed[mask] = 100.0
    for x in (images, changed):
        torch.manual_seed(3)  # the same masks for both batches
        method.train().training_step(Batch([x]))["loss"].backward()
    assert torch.equal(seen[0], seen[1])
    grad = predictions[0].grad
    assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()


def test_logged_values_and_loss():
    method = make(context_weight=0.5)
    out = method.training_step(Batch(plane_views(16)))
    assert set(out) == {"loss", "masked_mse", "context_mse"}
    torch.testing.assert_close(out["loss"].detach(), out["masked_mse"] + 0.5 * out["context_mse"])
    assert not out["masked_mse"].requires_grad


def test_loss_falls_on_tiny_data():
    before, after = loss_before_and_after(make(), plane_views(32), lr=3e-3)
    # Masks are redrawn every step: compare the loss on one fixed set of masks (0.28-0.39
    # of the start over five seeds).
    assert after < 0.6 * before


def test_state_dict_round_trip_gives_the_same_next_loss():
    check_state_dict_round_trip(lambda: make(context_weight=0.1))


def test_embed_gives_backbone_features_of_clean_images():
    method = make().eval()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(method.embed(images), method.backbone(images.float()))


def test_decoder_from_feature_dim_or_inferred_or_given():
    assert make().decoder_head.in_features == 16
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    inferred = ContextEncoder(backbone, input_shape=(1, 8, 8))
    assert inferred.decoder_head.in_features == 10
    given = ConvDecoder(10, (1, 8, 8), width=2)
    assert ContextEncoder(backbone, decoder_head=given).decoder_head is given


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"mask_fraction": 0.0}, ValueError, "mask_fraction"),
        ({"mask_fraction": 1.0}, ValueError, "mask_fraction"),
        ({"mask_fraction": -0.2}, ValueError, "mask_fraction"),
        ({"mask_fraction": "half"}, TypeError, "mask_fraction"),
        ({"context_weight": -1.0}, ValueError, "context_weight"),
        ({"fill_value": float("inf")}, ValueError, "fill_value"),
        ({"decoder_width": 0}, ValueError, "decoder_width"),
        ({"decoder_head": "conv"}, TypeError, "decoder_head"),
        ({"input_shape": None}, ValueError, "input_shape"),
    ],
)
def test_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_batch_errors():
    method = make()
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(Batch([torch.randn(1, 1, 8, 8)]))
    wrong = ContextEncoder(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), decoder_head=ConvDecoder(10, (1, 6, 6))
    )
    with pytest.raises(ValueError, match="decoder gives images of shape"):
        wrong.training_step(Batch([torch.randn(2, 1, 8, 8)]))


# -- the recipe and the registry entry ------------------------------------------------------


def test_recipe_is_one_light_normalised_view():
    recipe = reconstruction_views(8, mean=[0.5], std=[0.25])
    images = torch.full((4, 1, 8, 8), 128, dtype=torch.uint8)
    views = recipe(images, torch.Generator().manual_seed(0))
    assert len(views) == 1 and views[0].shape == (4, 1, 8, 8)
    # A constant image stays constant under crop and flip: only the normalisation shows.
    torch.testing.assert_close(views[0], torch.full_like(views[0], (128 / 255 - 0.5) / 0.25))
    assert reconstruction_heads(128, {}) == {}


def test_through_build_method():
    method = build_method(
        "context_encoder",
        (1, 8, 8),
        backbone_kwargs={"embedding_dim": 32, "width": 8},
        hparams={"decoder_width": 8},
        mean=[0.5],
        std=[0.3],
    )
    assert isinstance(method, ContextEncoder) and method.decoder_head.width == 8
    views = method.make_views(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8))
    out = method.training_step(Batch(views))
    assert torch.isfinite(out["loss"])
    big = build_method("context_encoder", (1, 28, 28))
    assert big.decoder_head.in_features == 512 and big.decoder_head.output_shape == (1, 28, 28)
