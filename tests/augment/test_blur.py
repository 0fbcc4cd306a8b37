import pytest
import torch
import torch.nn.functional as F

from metricssl.augment.blur import (
    GaussianBlur,
    _blur_grouped_conv,
    _blur_shifted,
    blur_per_sample,
    gaussian_kernels,
)


def reference_blur(images, kernels):
    """Sample by sample, with a full 2D kernel: slow and obviously right."""
    out = []
    k = kernels.shape[1]
    for x, kern in zip(images, kernels):
        c = x.shape[0]
        weight = torch.outer(kern, kern).to(x.dtype).expand(c, 1, k, k)
        padded = F.pad(x.unsqueeze(0), (k // 2,) * 4, mode="reflect")
        out.append(F.conv2d(padded, weight, groups=c)[0])
    return torch.stack(out)


def test_kernels_normalised_and_symmetric():
    k = gaussian_kernels(torch.tensor([0.1, 1.0, 5.0]), 5)
    torch.testing.assert_close(k.sum(1), torch.ones(3))
    torch.testing.assert_close(k, k.flip(1))
    assert k[0, 2] > 0.999  # tiny sigma: a delta
    assert k[2].max() - k[2].min() < 0.1  # large sigma: nearly flat


@pytest.mark.parametrize("k", [3, 5, 9])
def test_matches_reference(k):
    x = torch.rand(4, 3, 12, 10, dtype=torch.float64)
    kernels = gaussian_kernels(torch.tensor([0.3, 0.8, 1.5, 2.0]), k).double()
    torch.testing.assert_close(blur_per_sample(x, kernels), reference_blur(x, kernels))


def test_both_implementations_agree():
    x = torch.rand(3, 2, 9, 9)
    kernels = gaussian_kernels(torch.tensor([0.5, 1.0, 2.0]), 5)
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    torch.testing.assert_close(_blur_shifted(padded, kernels), _blur_grouped_conv(padded, kernels))


@pytest.mark.parametrize("k", [3, 9])
def test_constant_image_is_preserved(k):
    x = torch.full((4, 3, 16, 16), 0.3)
    out = GaussianBlur(kernel_size=k, p=1.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x)
    torch.testing.assert_close(out.mean(), torch.tensor(0.3))


def test_p_one_smooths_p_zero_identity():
    x = torch.rand(8, 1, 16, 16)
    blurred = GaussianBlur(3, sigma=(1.0, 2.0), p=1.0)(x, torch.Generator().manual_seed(0))
    assert (blurred.var(dim=(1, 2, 3)) < x.var(dim=(1, 2, 3))).all()
    assert torch.equal(GaussianBlur(3, p=0.0)(x), x)


def test_unblurred_samples_unchanged_and_sigma_per_sample():
    x = torch.rand(1, 1, 10, 10).expand(32, 1, 10, 10)
    out = GaussianBlur(5, sigma=(0.1, 2.0), p=0.5)(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    assert same.any() and (~same).any()
    assert len({tuple(o.flatten().tolist()) for o in out[~same]}) == (~same).sum()


def test_seeded_reproducibility():
    x = torch.rand(16, 3, 8, 8)
    blur = GaussianBlur(3, p=0.5)
    a = blur(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, blur(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, blur(x, torch.Generator().manual_seed(1)))


def test_kernel_too_large_for_image():
    with pytest.raises(ValueError, match="kernel_size"):
        GaussianBlur(9, p=1.0)(torch.rand(1, 1, 4, 4))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(kernel_size=4), "kernel_size"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(kernel_size=3.0), "kernel_size"),
        (dict(kernel_size=3, sigma=(0.0, 1.0)), "sigma"),
        (dict(kernel_size=3, sigma=(2.0, 1.0)), "sigma"),
        (dict(kernel_size=3, p=1.5), "p"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        GaussianBlur(**kwargs)
