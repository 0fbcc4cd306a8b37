import pytest
import torch

from metricssl.augment.checks import (
    check_color_channels,
    check_images,
    check_probabilities,
    check_range,
    check_size,
)
from metricssl.augment.convert import ToFloat, to_float_images


def test_to_float_from_uint8():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    y = to_float_images(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y.flatten(), torch.tensor([0.0, 0.2, 1.0]))
    assert torch.equal(ToFloat()(x), y)


def test_float_passes_through_unchanged():
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    assert to_float_images(x) is x


@pytest.mark.parametrize(
    "bad, error",
    [
        ([[0.0]], TypeError),
        (torch.rand(3, 4, 4), ValueError),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int32), TypeError),
        (torch.zeros(0, 1, 4, 4), ValueError),
        (torch.zeros(2, 1, 0, 4), ValueError),
    ],
)
def test_bad_images(bad, error):
    with pytest.raises(error, match="images"):
        check_images(bad)


def test_color_channels():
    assert check_color_channels(torch.rand(1, 3, 2, 2), "x") == 3
    with pytest.raises(ValueError, match="channels"):
        check_color_channels(torch.rand(1, 2, 2, 2), "x")


def test_size():
    assert check_size("size", 5) == (5, 5)
    assert check_size("size", (3, 4)) == (3, 4)
    for bad in (0, -1, (3, 0), (3,), 2.5, True):
        with pytest.raises((TypeError, ValueError), match="size"):
            check_size("size", bad)


def test_range():
    assert check_range("scale", (0.2, 1), low=0, high=1) == (0.2, 1.0)
    with pytest.raises(ValueError, match="ordered"):
        check_range("scale", (0.5, 0.2))
    with pytest.raises(ValueError, match=r"scale\[1\]"):
        check_range("scale", (0.2, 1.5), high=1)
    with pytest.raises(TypeError, match="scale"):
        check_range("scale", 0.5)


def test_probabilities():
    assert check_probabilities("blur_p", 0.5, 3) == (0.5, 0.5, 0.5)
    assert check_probabilities("blur_p", (1.0, 0.1), 2) == (1.0, 0.1)
    with pytest.raises(ValueError, match=r"blur_p\[1\]"):
        check_probabilities("blur_p", (1.0, 1.1), 2)
    with pytest.raises(TypeError, match="blur_p"):
        check_probabilities("blur_p", (1.0, 0.1, 0.2), 2)
