"""On CUDA the augmentations keep shapes, dtypes and ranges, stay on the device, and with a
CPU generator (same parameter draws) give the CPU's values. Skipped without CUDA."""

import pytest
import torch

from metricssl.augment.blur import GaussianBlur
from metricssl.augment.color import ColorJitter, RandomGrayscale
from metricssl.augment.crop import RandomResizedCrop
from metricssl.augment.flip import RandomHorizontalFlip
from metricssl.augment.multi_crop import multi_crop
from metricssl.augment.recipes import RECIPES
from metricssl.augment.solarize import RandomSolarize

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(autouse=True)
def exact_convolutions():
    """TF32 convolutions would differ from the CPU's by ~1e-3; compare without them."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def batch(c):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (16, c, 32, 32), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("c", [1, 3])
def test_recipes_match_cpu(name, c):
    recipe = RECIPES[name](24)
    x = batch(c)
    cpu = recipe(x, torch.Generator().manual_seed(0))
    cuda = recipe(x.cuda(), torch.Generator().manual_seed(0))
    for a, b in zip(cpu, cuda):
        assert b.device.type == "cuda" and b.shape == a.shape and b.dtype == a.dtype
        assert b.min() >= 0 and b.max() <= 1
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "transform",
    [
        RandomResizedCrop(20),
        RandomHorizontalFlip(),
        ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        RandomGrayscale(0.5),
        GaussianBlur(3, p=0.5),
        GaussianBlur(9, p=0.5),
        RandomSolarize(p=0.5),
    ],
)
def test_transforms_match_cpu(transform):
    x = batch(3)
    cpu = transform(x, torch.Generator().manual_seed(1))
    cuda = transform(x.cuda(), torch.Generator().manual_seed(1))
    assert cuda.device.type == "cuda" and cuda.shape == cpu.shape
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)


def test_cuda_generator_reproducible():
    recipe = multi_crop(24, 12, n_local=2, image_size=32)
    x = batch(3).cuda()
    a = recipe(x, torch.Generator(device="cuda").manual_seed(0))
    b = recipe(x, torch.Generator(device="cuda").manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert [v.shape[-1] for v in a] == [24, 24, 12, 12]
