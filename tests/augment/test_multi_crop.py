import pytest
import torch

from metricssl.augment.blur import GaussianBlur
from metricssl.augment.crop import RandomResizedCrop
from metricssl.augment.multi_crop import MultiCrop, multi_crop
from metricssl.augment.solarize import RandomSolarize


def batch(n=4, c=1, h=28, w=28):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)


def test_views_and_sizes():
    recipe = multi_crop(24, 12, n_local=3, image_size=28)
    assert isinstance(recipe, MultiCrop)
    assert recipe.n_global == 2 and recipe.n_local == 3 and recipe.n_views == 5
    views = recipe(batch(), torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(4, 1, 24, 24)] * 2 + [(4, 1, 12, 12)] * 3
    assert all(v.min() >= 0 and v.max() <= 1 for v in views)


def test_no_local_views_and_rectangles():
    views = multi_crop((28, 24), (10, 8), n_local=0, image_size=(28, 30))(batch(w=30))
    assert [tuple(v.shape[-2:]) for v in views] == [(28, 24), (28, 24)]


def test_dino_defaults():
    recipe = multi_crop(28, 12, n_local=2)
    g1, g2, local = recipe.views[0], recipe.views[1], recipe.views[2]

    def first(view, kind):
        return next(t for t in view.transforms if isinstance(t, kind))

    assert first(g1, RandomResizedCrop).scale == (0.4, 1.0)
    assert first(local, RandomResizedCrop).scale == (0.05, 0.4)
    assert first(g1, GaussianBlur).p == 1.0 and first(g2, GaussianBlur).p == 0.1
    assert first(local, GaussianBlur).p == 0.5
    assert first(g2, RandomSolarize).p == 0.2
    assert not any(isinstance(t, RandomSolarize) for t in g1.transforms + local.transforms)


def test_reproducible():
    recipe = multi_crop(28, 12, n_local=2)
    x = batch()
    a = recipe(x, torch.Generator().manual_seed(0))
    b = recipe(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize(
    "args, kwargs, name",
    [
        ((28, 30), {}, "local_size"),
        ((32, 12), dict(image_size=28), "global_size"),
        ((28, (12, 30)), dict(image_size=28), "local_size"),
        ((28, 12, -1), {}, "n_local"),
        ((28, 0), {}, "local_size"),
        ((28, 12), dict(local_scale=(0.4, 0.05)), "local_scale"),
        ((28, 12), dict(global_scale=(0.0, 1.0)), "global_scale"),
        ((28, 12), dict(global_blur_p=(1.0, 1.5)), r"global_blur_p\[1\]"),
        ((28, 12), dict(local_blur_p=2.0), "local_blur_p"),
        ((28, 12), dict(global_solarize_p=-0.5), "global_solarize_p"),
    ],
)
def test_bad_arguments(args, kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        multi_crop(*args, **kwargs)


def test_images_smaller_than_crops():
    with pytest.raises(ValueError, match="global_size"):
        multi_crop(28, 12)(batch(h=20, w=20))
