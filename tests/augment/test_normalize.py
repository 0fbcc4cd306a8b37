import pytest
import torch

from metricssl.augment.normalize import Normalize


def test_values_per_channel():
    x = torch.full((2, 3, 2, 2), 0.5)
    out = Normalize(mean=(0.5, 0.25, 0.0), std=(1.0, 0.5, 0.25))(x)
    assert out[:, 0].eq(0).all() and out[:, 1].eq(0.5).all() and out[:, 2].eq(2).all()


def test_single_value_and_uint8():
    x = torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)
    out = Normalize(mean=0.5, std=0.5)(x)
    assert out.dtype == torch.float32 and out.eq(1).all()


def test_channel_mismatch():
    with pytest.raises(ValueError, match="mean has 3 values"):
        Normalize(mean=(0.1, 0.2, 0.3), std=(0.1, 0.2, 0.3))(torch.rand(1, 1, 2, 2))


@pytest.mark.parametrize(
    "mean, std, name",
    [
        ((0.5,), (0.0,), "std"),
        ((0.5,), (-1.0,), "std"),
        ((0.5, 0.5), (0.2, 0.2, 0.2), "mean has 2 values"),
        ((), (0.2,), "mean"),
        ("abc", (0.2,), "mean"),
    ],
)
def test_bad_arguments(mean, std, name):
    with pytest.raises((ValueError, TypeError), match=name):
        Normalize(mean, std)
