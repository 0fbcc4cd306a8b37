import pytest
import torch

from metricssl.augment import base
from metricssl.augment.base import apply_where, per_sample
from metricssl.augment.blur import GaussianBlur
from metricssl.augment.color import ColorJitter


def scale(images, factor):
    return images * per_sample(factor)


def test_cpu_selection_matches_where():
    x = torch.rand(10, 2, 3, 3)
    f = torch.rand(10) + 1
    mask = torch.rand(10) < 0.5
    mask[0], mask[1] = True, False
    expected = torch.where(per_sample(mask), scale(x, f), x)
    before = x.clone()
    assert torch.equal(apply_where(x, mask, scale, f), expected)
    assert torch.equal(x, before)  # not in place by default
    assert torch.equal(apply_where(x, mask, scale, f, inplace=True), expected)
    assert torch.equal(x, expected)


def test_none_and_all_selected():
    x = torch.rand(4, 1, 2, 2)
    f = torch.full((4,), 2.0)
    assert apply_where(x, torch.zeros(4, dtype=torch.bool), scale, f) is x
    assert torch.equal(apply_where(x, torch.ones(4, dtype=torch.bool), scale, f), 2 * x)


@pytest.mark.parametrize(
    "transform", [ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), GaussianBlur(3, p=0.5)]
)
def test_masked_path_gives_the_selected_path_values(transform, monkeypatch):
    """The path CUDA takes (whole batch + torch.where), run on the CPU, gives the same values."""
    x = torch.rand(32, 3, 8, 8)
    selected = transform(x, torch.Generator().manual_seed(0))
    monkeypatch.setattr(base, "_select_samples", lambda images: False)
    masked = transform(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(masked, selected, atol=1e-6, rtol=0)
    assert not torch.equal(masked, x)
