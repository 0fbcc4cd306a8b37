import pytest
import torch

from metricssl.augment.compose import Compose, MultiView
from metricssl.augment.crop import RandomResizedCrop
from metricssl.augment.flip import RandomHorizontalFlip
from metricssl.augment.solarize import RandomSolarize


def test_compose_applies_in_order():
    x = torch.tensor([0.25, 0.75]).view(1, 1, 1, 2)
    out = Compose([RandomHorizontalFlip(p=1.0), RandomSolarize(0.5, p=1.0)])(x)
    assert out.flatten().tolist() == [0.25, 0.25]


def test_compose_converts_and_is_reproducible():
    x = torch.randint(0, 256, (8, 1, 12, 12), dtype=torch.uint8)
    view = Compose([RandomResizedCrop(8), RandomHorizontalFlip()])
    a = view(x, torch.Generator().manual_seed(0))
    assert a.dtype == torch.float32 and a.shape == (8, 1, 8, 8)
    assert torch.equal(a, view(x, torch.Generator().manual_seed(0)))


def test_multiview_views_differ_and_repeat():
    x = torch.rand(4, 1, 12, 12)
    views = MultiView([RandomResizedCrop(8), RandomResizedCrop(8)])
    a1, a2 = views(x, torch.Generator().manual_seed(0))
    b1, b2 = views(x, torch.Generator().manual_seed(0))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)
    assert views.n_views == 2


@pytest.mark.parametrize("bad", [[lambda x: x], "crop", None])
def test_bad_transforms(bad):
    with pytest.raises(TypeError, match="transforms"):
        Compose(bad)


def test_empty_views():
    with pytest.raises(ValueError, match="views"):
        MultiView([])
