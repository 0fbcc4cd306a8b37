"""Denoising auto-encoder: masking and Gaussian noise, the loss, training, resume, errors."""

import pytest
import torch
from torch import nn

from metricssl.models.decoder import ConvDecoder
from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.denoising_autoencoder import DenoisingAutoencoder, pixel_masks
from metricssl.ssl.method import Batch
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
    return DenoisingAutoencoder(backbone, **kwargs)


class Zeros(nn.Module):
    """A decoder that always predicts 0: the loss is then the target's mean square."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, features):
        return torch.zeros(len(features), 1, 8, 8) + self.dummy


def test_pixel_masks_destroy_a_fixed_number_of_pixels_that_differ_per_image():
    masks = pixel_masks(64, 8, 8, 0.3, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 8, 8) and masks.dtype == torch.bool
    assert (masks.sum(dim=(1, 2, 3)) == round(0.3 * 64)).all()
    assert len(torch.unique(masks.flatten(1), dim=0)) == 64
    # Every pixel position is hit about equally often.
    many = pixel_masks(4000, 8, 8, 0.3, generator=torch.Generator().manual_seed(1))
    share = many.float().mean(dim=0)
    assert share.min() > 0.26 and share.max() < 0.34
    assert not pixel_masks(4, 8, 8, 0.0).any()
    a = pixel_masks(4, 8, 8, 0.5, generator=torch.Generator().manual_seed(3))
    b = pixel_masks(4, 8, 8, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_masking_noise_sets_the_masked_pixels_in_every_channel():
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 8))
    method = DenoisingAutoencoder(
        backbone, input_shape=(3, 8, 8), masking_fraction=0.25, mask_value=-3.0
    )
    images = torch.randn(4, 3, 8, 8)
    noisy, mask = method.corrupt(images, torch.Generator().manual_seed(0))
    assert (mask.sum(dim=(1, 2, 3)) == 16).all()
    m = mask.expand_as(images)
    assert (noisy[m] == -3.0).all() and torch.equal(noisy[~m], images[~m])


def test_gaussian_noise_has_the_requested_spread():
    method = make(masking_fraction=0.0, noise_std=0.5)
    images = torch.zeros(64, 1, 8, 8)
    noisy, mask = method.corrupt(images, torch.Generator().manual_seed(0))
    assert not mask.any()
    assert noisy.std().item() == pytest.approx(0.5, rel=0.05)
    assert noisy.mean().abs().item() < 0.03
    both = make(masking_fraction=0.5, noise_std=0.5)
    noisy, mask = both.corrupt(images, torch.Generator().manual_seed(0))
    assert (noisy[mask] == 0).all() and (noisy[~mask] != 0).all()


def test_backbone_sees_the_corrupted_image_and_the_target_is_the_clean_one():
    method = make(decoder_head=Zeros(), masking_fraction=0.5, mask_value=7.0)
    seen = []
    method.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    views = plane_views()
    out = method.training_step(Batch(views))
    assert (seen[0] == 7.0).float().mean().item() == pytest.approx(0.5)
    # The loss is the mean squared error to the clean view over all pixels.
    torch.testing.assert_close(out["loss"], views[0].square().mean())
    assert set(out) == {"loss", "destroyed_mse"}


def test_loss_falls_on_tiny_data():
    before, after = loss_before_and_after(make(noise_std=0.3), plane_views(), lr=3e-3)
    assert after < 0.6 * before


def test_state_dict_round_trip_gives_the_same_next_loss():
    check_state_dict_round_trip(lambda: make(noise_std=0.2))


def test_embed_gives_backbone_features_of_clean_images():
    method = make().eval()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(method.embed(images), method.backbone(images.float()))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"masking_fraction": 1.0}, ValueError, "masking_fraction"),
        ({"masking_fraction": -0.1}, ValueError, "masking_fraction"),
        ({"noise_std": -0.1}, ValueError, "noise_std"),
        ({"noise_std": float("inf")}, ValueError, "noise_std"),
        ({"noise_std": "big"}, TypeError, "noise_std"),
        ({"masking_fraction": 0.0, "noise_std": 0.0}, ValueError, "no noise"),
        ({"mask_value": float("nan")}, ValueError, "mask_value"),
        ({"decoder_width": 0}, ValueError, "decoder_width"),
        ({"decoder_head": 3}, TypeError, "decoder_head"),
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
    wrong = make(decoder_head=ConvDecoder(16, (1, 4, 4)))
    with pytest.raises(ValueError, match="decoder gives images of shape"):
        wrong.training_step(Batch([torch.randn(2, 1, 8, 8)]))


def test_through_build_method():
    method = build_method(
        "denoising_autoencoder",
        (1, 8, 8),
        backbone_kwargs={"embedding_dim": 32, "width": 8},
        hparams={"decoder_width": 8, "noise_std": 0.1},
        mean=[0.5],
        std=[0.3],
    )
    assert method.noise_std == 0.1 and method.decoder_head.width == 8
    views = method.make_views(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8))
    assert torch.isfinite(method.training_step(Batch(views))["loss"])
