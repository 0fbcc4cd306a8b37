import pytest
import torch

from metricssl.augment.crop import RandomResizedCrop, crop_and_resize, sample_crop_boxes

CPU = torch.device("cpu")


def images(n=8, c=1, h=28, w=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)


def test_shape_dtype_range():
    out = RandomResizedCrop((20, 24))(images(c=3, h=32, w=30), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 20, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_float_dtype_kept(dtype):
    x = torch.rand(4, 1, 16, 16).to(dtype)
    out = RandomResizedCrop(12)(x, torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == (4, 1, 12, 12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_box_is_identity(dtype):
    x = torch.rand(5, 3, 16, 16, dtype=dtype)
    crop = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(crop(x, torch.Generator().manual_seed(0)), x, atol=1e-6, rtol=0)


def test_full_box_is_identity_non_square():
    x = torch.rand(3, 1, 12, 18)
    crop = RandomResizedCrop((12, 18), scale=(1.0, 1.0), ratio=(1.5, 1.5))
    torch.testing.assert_close(crop(x), x, atol=1e-6, rtol=0)


def test_box_at_its_own_size_is_the_slice():
    x = torch.rand(3, 2, 20, 20)
    top, left = torch.tensor([0, 5, 11]), torch.tensor([3, 0, 8])
    h, w = torch.tensor([7, 7, 7]), torch.tensor([9, 9, 9])
    out = crop_and_resize(x, top, left, h, w, (7, 9))
    for i in range(3):
        t, lft = top[i].item(), left[i].item()
        torch.testing.assert_close(out[i], x[i, :, t : t + 7, lft : lft + 9], atol=1e-6, rtol=0)


def test_boxes_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    top, left, h, w = sample_crop_boxes(2000, 28, 28, (0.2, 0.6), (0.5, 2.0), CPU, g)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 28).all() and (left + w <= 28).all()
    h, w = h.double(), w.double()
    # Sides are rounded to whole pixels, so each is within half a pixel of the drawn one.
    slack = 0.5 * (h + w) + 0.25
    assert (h * w >= 0.2 * 784 - slack).all() and (h * w <= 0.6 * 784 + slack).all()
    assert ((w + 0.5) / (h - 0.5) >= 0.5).all() and ((w - 0.5) / (h + 0.5) <= 2.0).all()
    # The whole ranges are used, independently per sample.
    assert (h * w > 0.5 * 784).any() and (h * w < 0.25 * 784).any()
    assert (w / h > 1.5).any() and (w / h < 0.7).any()


def test_impossible_draws_fall_back_to_central_box():
    # No box of aspect ratio >= 2 covers the whole square image.
    top, left, h, w = sample_crop_boxes(10, 20, 20, (1.0, 1.0), (2.0, 3.0), CPU)
    assert (w == 20).all() and (h == 10).all() and (top == 5).all() and (left == 0).all()


def test_per_sample_independence():
    x = images(n=1).expand(16, 1, 28, 28)
    out = RandomResizedCrop(28)(x, torch.Generator().manual_seed(1))
    distinct = {tuple(o.flatten()[:50].tolist()) for o in out}
    assert len(distinct) == 16


def test_seeded_reproducibility():
    x = images()
    crop = RandomResizedCrop(20)
    a = crop(x, torch.Generator().manual_seed(5))
    b = crop(x, torch.Generator().manual_seed(5))
    c = crop(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_p_zero_resizes_whole_image():
    x = torch.rand(4, 1, 10, 10)
    out = RandomResizedCrop(10, scale=(0.1, 0.2), p=0.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_p_one_always_crops():
    x = torch.rand(16, 1, 10, 10)
    out = RandomResizedCrop(10, scale=(0.1, 0.2), p=1.0)(x, torch.Generator().manual_seed(0))
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 1e-3).all()


def test_bicubic_stays_in_range():
    x = (torch.rand(8, 1, 12, 12) > 0.5).float()
    out = RandomResizedCrop(24, interpolation="bicubic")(x, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(size=0), "size"),
        (dict(size=(4, -1)), "size"),
        (dict(size=8, scale=(0.5, 0.2)), "scale"),
        (dict(size=8, scale=(0.0, 1.0)), "scale"),
        (dict(size=8, scale=(0.1, 1.5)), "scale"),
        (dict(size=8, ratio=(0.0, 1.0)), "ratio"),
        (dict(size=8, interpolation="area"), "interpolation"),
        (dict(size=8, p=-0.1), "p"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        RandomResizedCrop(**kwargs)
