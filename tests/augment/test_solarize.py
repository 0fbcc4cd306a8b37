import pytest
import torch

from metricssl.augment.solarize import RandomSolarize


def test_threshold_semantics():
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64).view(1, 1, 1, 5)
    out = RandomSolarize(threshold=0.5, p=1.0)(x).flatten().tolist()
    assert out == [0.0, 0.25, 0.5, 0.25, 0.0]  # pixels >= threshold are inverted
    assert RandomSolarize(threshold=0.0, p=1.0)(x).flatten().tolist() == [1, 0.75, 0.5, 0.25, 0]
    assert RandomSolarize(threshold=1.0, p=1.0)(x).flatten().tolist() == [0, 0.25, 0.5, 0.75, 0]


def test_uint8_input():
    x = torch.tensor([0, 200], dtype=torch.uint8).view(1, 1, 1, 2)
    out = RandomSolarize(threshold=0.5, p=1.0)(x)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 55 / 255]))


def test_p_zero_identity_and_per_sample():
    x = torch.rand(1, 1, 6, 6).expand(64, 1, 6, 6)
    assert torch.equal(RandomSolarize(p=0.0)(x), x)
    out = RandomSolarize(p=0.5)(x, torch.Generator().manual_seed(0))
    changed = (out != x).flatten(1).any(1)
    assert changed.any() and (~changed).any()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("kwargs", [dict(threshold=1.5), dict(threshold=-0.1), dict(p=2.0)])
def test_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        RandomSolarize(**kwargs)
