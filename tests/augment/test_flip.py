import pytest
import torch

from metricssl.augment.flip import RandomHorizontalFlip


def test_known_image_flipped():
    x = torch.tensor([[0, 64, 128], [255, 32, 16]], dtype=torch.uint8).view(1, 1, 2, 3)
    out = RandomHorizontalFlip(p=1.0)(x)
    expected = torch.tensor([[128, 64, 0], [16, 32, 255]]).view(1, 1, 2, 3) / 255.0
    torch.testing.assert_close(out, expected)
    assert out.dtype == torch.float32


def test_p_zero_is_identity():
    x = torch.rand(6, 3, 5, 7)
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)


def test_each_sample_flipped_or_not():
    x = torch.rand(1, 2, 4, 6).expand(64, 2, 4, 6)
    out = RandomHorizontalFlip(p=0.5)(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()
    assert flipped.any() and kept.any()


def test_seeded_reproducibility():
    x = torch.rand(32, 1, 4, 4)
    flip = RandomHorizontalFlip()
    a = flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, flip(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, flip(x, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("p", [-0.1, 1.01, "0.5", None])
def test_bad_p(p):
    with pytest.raises((TypeError, ValueError), match="p"):
        RandomHorizontalFlip(p)
