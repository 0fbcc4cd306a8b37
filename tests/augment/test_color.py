import colorsys

import pytest
import torch

from metricssl.augment.color import (
    ColorJitter,
    RandomGrayscale,
    adjust_contrast,
    adjust_saturation,
    rgb_to_grayscale,
    shift_hue,
)


def colorsys_hue(images, shift):
    """Pixel by pixel with the standard library's HSV conversion."""
    out = torch.empty_like(images)
    for n in range(images.shape[0]):
        for i in range(images.shape[2]):
            for j in range(images.shape[3]):
                h, s, v = colorsys.rgb_to_hsv(*images[n, :, i, j].tolist())
                rgb = colorsys.hsv_to_rgb((h + float(shift[n])) % 1.0, s, v)
                out[n, :, i, j] = torch.tensor(rgb, dtype=images.dtype)
    return out


# --- grayscale -----------------------------------------------------------------------------


def test_grayscale_equal_channels_luma():
    x = torch.rand(4, 3, 5, 5)
    out = RandomGrayscale(p=1.0)(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[:, 0], luma)


def test_grayscale_one_channel_and_p_zero_unchanged():
    x = torch.rand(4, 1, 5, 5)
    assert torch.equal(RandomGrayscale(p=1.0)(x), x)
    x3 = torch.rand(4, 3, 5, 5)
    assert torch.equal(RandomGrayscale(p=0.0)(x3), x3)


def test_grayscale_per_sample():
    x = torch.rand(1, 3, 4, 4).expand(64, 3, 4, 4)
    out = RandomGrayscale(p=0.5)(x, torch.Generator().manual_seed(0))
    gray = (out[:, 0] == out[:, 1]).flatten(1).all(1)
    assert gray.any() and (~gray).any()
    assert torch.equal(out[~gray], x[~gray])


# --- hue ----------------------------------------------------------------------------------


def test_hue_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 4, 4, dtype=torch.float64, generator=g)
    x[0, :, 0, 0] = 0.5  # a gray pixel
    x[1, :, 0, 0] = torch.tensor([0.2, 0.7, 0.7], dtype=torch.float64)  # a max tie
    shift = torch.tensor([0.0, 0.1, -0.1, 0.5, -0.5, 0.37], dtype=torch.float64)
    torch.testing.assert_close(shift_hue(x, shift), colorsys_hue(x, shift))


def test_hue_primaries():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(3, 3, 1, 1)
    out = shift_hue(red, torch.tensor([1 / 3, 1 / 6, -1 / 3])).flatten(1)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1, 0], [1, 1, 0], [0, 0, 1]]))


# --- colour jitter --------------------------------------------------------------------------


def test_brightness_factor_on_constant_image():
    x = torch.full((2, 1, 3, 3), 0.4)
    out = ColorJitter(brightness=(1.5, 1.5))(x)
    torch.testing.assert_close(out, torch.full_like(x, 0.6))
    out = ColorJitter(brightness=(3.0, 3.0))(x)
    assert out.eq(1.0).all()  # clamped
    out = ColorJitter(brightness=(0.0, 0.0))(x)
    assert out.eq(0.0).all()


def test_brightness_range_from_number():
    x = torch.full((400, 1, 2, 2), 0.5)
    out = ColorJitter(brightness=0.4)(x, torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / 0.5
    assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
    assert factors.min() < 0.7 and factors.max() > 1.3


def test_contrast_semantics():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2)
    out = ColorJitter(contrast=(0.5, 0.5))(x)
    torch.testing.assert_close(out, 0.5 * x + 0.5 * 0.5)
    c = torch.full((1, 1, 2, 2), 0.3)
    assert torch.equal(adjust_contrast(c, torch.tensor([2.0])), c)  # nothing to stretch


def test_saturation_zero_gives_gray():
    x = torch.rand(3, 3, 4, 4)
    out = ColorJitter(saturation=(0.0, 0.0))(x)
    torch.testing.assert_close(out, rgb_to_grayscale(x).expand_as(x))
    torch.testing.assert_close(adjust_saturation(x, torch.ones(3)), x)


def test_saturation_and_hue_are_noops_on_one_channel():
    x = torch.rand(8, 1, 5, 5)
    assert torch.equal(ColorJitter(saturation=0.9, hue=0.5)(x, torch.Generator().manual_seed(0)), x)


def test_p_zero_identity_p_one_applies():
    x = torch.rand(16, 3, 6, 6)
    assert torch.equal(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.0)(x), x)
    out = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)(x, torch.Generator().manual_seed(0))
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 1e-4).all()


def test_order_is_random_per_sample():
    # Brightness x2 then contrast 0 gives the clamped image's mean (0.7); contrast 0 then
    # brightness x2 gives twice the mean (1.0).
    x = torch.tensor([0.2, 0.8]).view(1, 1, 1, 2).expand(64, 1, 1, 2)
    out = ColorJitter(brightness=(2.0, 2.0), contrast=(0.0, 0.0))(
        x, torch.Generator().manual_seed(0)
    )
    first = out[:, 0, 0, 0]
    assert ((first - 0.7).abs() < 1e-6).any() and ((first - 1.0).abs() < 1e-6).any()
    assert (((first - 0.7).abs() < 1e-6) | ((first - 1.0).abs() < 1e-6)).all()
    assert (out[:, 0, 0, 0] == out[:, 0, 0, 1]).all()


def test_jitter_range_shape_dtype_and_input_untouched():
    x = torch.rand(32, 3, 8, 8, dtype=torch.float64)
    before = x.clone()
    out = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float64
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before)


def test_jitter_seeded_reproducibility():
    x = torch.rand(16, 3, 4, 4)
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)
    a = jitter(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, jitter(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, jitter(x, torch.Generator().manual_seed(1)))


def test_jitter_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="channels"):
        ColorJitter(brightness=0.4)(torch.rand(2, 2, 4, 4))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(brightness=-0.1), "brightness"),
        (dict(contrast=(1.2, 0.8)), "contrast"),
        (dict(saturation=(-0.1, 1.0)), "saturation"),
        (dict(saturation="0.4"), "saturation"),
        (dict(hue=0.6), "hue"),
        (dict(hue=(-0.7, 0.1)), "hue"),
        (dict(hue=(0.2, 0.1)), "hue"),
        (dict(p=1.2), "p"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        ColorJitter(**kwargs)
