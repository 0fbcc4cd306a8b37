import pytest
import torch

from metricssl.augment import base
from metricssl.augment.blur import GaussianBlur
from metricssl.augment.color import ColorJitter
from metricssl.augment.crop import RandomResizedCrop
from metricssl.augment.normalize import Normalize
from metricssl.augment.recipes import (
    RECIPES,
    augmentation_view,
    barlow_twins_views,
    byol_views,
    default_blur_kernel_size,
    default_crop_scale,
    moco_v2_views,
    simclr_views,
    simsiam_views,
    vicreg_views,
)
from metricssl.augment.solarize import RandomSolarize
from tests.augment.op_count import CountOps

ALL = [simclr_views, moco_v2_views, simsiam_views, byol_views, barlow_twins_views, vicreg_views]


def batch(c=1, size=28, n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


def steps(view, kind):
    return [t for t in view.transforms if isinstance(t, kind)]


@pytest.mark.parametrize("recipe", ALL)
@pytest.mark.parametrize("c", [1, 3])
def test_two_views_of_the_right_size(recipe, c):
    views = recipe(24)(batch(c=c), torch.Generator().manual_seed(0))
    assert len(views) == 2
    for v in views:
        assert v.shape == (8, c, 24, 24) and v.dtype == torch.float32
        assert v.min() >= 0 and v.max() <= 1
    assert not torch.equal(views[0], views[1])


@pytest.mark.parametrize("recipe", ALL)
def test_reproducible(recipe):
    r = recipe((20, 24))
    x = batch(c=3, size=32)
    a = r(x, torch.Generator().manual_seed(3))
    b = r(x, torch.Generator().manual_seed(3))
    c = r(x, torch.Generator().manual_seed(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (8, 3, 20, 24)


def test_simclr_defaults_and_n_views():
    r = simclr_views(28, n_views=3)
    assert r.n_views == 3
    view = r.views[0]
    assert steps(view, RandomResizedCrop)[0].scale == (0.2, 1.0)  # small image default
    jitter = steps(view, ColorJitter)[0]
    assert jitter.p == 0.8 and jitter.brightness == (0.6, 1.4) and jitter.hue == (-0.1, 0.1)
    blur = steps(view, GaussianBlur)[0]
    assert blur.p == 0.5 and blur.kernel_size == 3
    assert not steps(view, RandomSolarize)
    assert steps(simclr_views(224).views[0], RandomResizedCrop)[0].scale == (0.08, 1.0)


@pytest.mark.parametrize("recipe", [byol_views, barlow_twins_views, vicreg_views])
def test_asymmetric_views(recipe):
    v1, v2 = recipe(32).views
    assert steps(v1, GaussianBlur)[0].p == 1.0 and not steps(v1, RandomSolarize)
    assert steps(v2, GaussianBlur)[0].p == 0.1 and steps(v2, RandomSolarize)[0].p == 0.2
    assert steps(v1, ColorJitter)[0].saturation == (0.8, 1.2)


@pytest.mark.parametrize("recipe", [moco_v2_views, simsiam_views])
def test_moco_simsiam_crop_scale(recipe):
    assert steps(recipe(224).views[0], RandomResizedCrop)[0].scale == (0.2, 1.0)


def test_recipe_table():
    assert set(RECIPES) == {"simclr", "moco_v2", "simsiam", "byol", "barlow_twins", "vicreg"}
    assert RECIPES["byol"] is byol_views


def test_defaults_by_size():
    assert default_crop_scale(28) == (0.2, 1.0)
    assert default_crop_scale((32, 40)) == (0.08, 1.0)
    assert [default_blur_kernel_size(s) for s in (8, 28, 32, 64, 96, 224)] == [3, 3, 3, 7, 9, 23]


def test_normalisation():
    r = simclr_views(16, mean=(0.5,), std=(0.5,), jitter_p=0, blur_p=0)
    assert isinstance(r.views[0].transforms[-1], Normalize)
    out = r(torch.full((4, 1, 16, 16), 255, dtype=torch.uint8))
    torch.testing.assert_close(out[0], torch.ones(4, 1, 16, 16))


def test_zero_probabilities_leave_out_steps():
    view = augmentation_view(16, flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    assert [type(t) for t in view.transforms] == [RandomResizedCrop]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=0), "image_size"),
        (dict(image_size=(28,)), "image_size"),
        (dict(n_views=0), "n_views"),
        (dict(crop_scale=(0.5, 0.1)), "crop_scale"),
        (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
        (dict(crop_scale=(0.2, 1.2)), "crop_scale"),
        (dict(crop_ratio=(0.0, 1.0)), "crop_ratio"),
        (dict(flip_p=1.5), "flip_p"),
        (dict(jitter_p=-0.1), "jitter_p"),
        (dict(grayscale_p=2), "grayscale_p"),
        (dict(blur_p=(1.0, 2.0)), r"blur_p\[1\]"),
        (dict(blur_p=(1.0, 0.5, 0.1)), "blur_p"),
        (dict(solarize_p=-1), "solarize_p"),
        (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
        (dict(blur_kernel_size=4), "blur_kernel_size"),
        (dict(solarize_threshold=1.5), "solarize_threshold"),
        (dict(brightness=-1), "brightness"),
        (dict(hue=0.7), "hue"),
        (dict(interpolation="area"), "interpolation"),
        (dict(mean=(0.5,)), "mean and std"),
    ],
)
def test_bad_arguments(kwargs, name):
    kwargs = {"image_size": 28, **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        simclr_views(**kwargs)


def test_simclr_view_op_count_on_the_device_path(monkeypatch):
    """Ops of one SimCLR view of an RGB batch on the path CUDA takes (run here on the CPU):
    513 when the colour jitter ran each adjustment over the whole batch at each stage, 438
    with one blend pass per stage."""
    monkeypatch.setattr(base, "_select_samples", lambda images: False)
    view = augmentation_view(32, crop_scale=(0.2, 1.0))
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    with CountOps() as ops:
        view(x, torch.Generator().manual_seed(0))
    assert ops.count <= 450
