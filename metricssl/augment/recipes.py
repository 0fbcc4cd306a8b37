"""Per-method augmentation recipes: each returns a :class:`MultiView` that makes the views a
self-supervised method trains on, ``views = recipe(images)``.

Defaults follow the papers (and solo-learn / lightly), adapted to small images:

- ``crop_scale=None`` picks (0.08, 1) for images of side >= 32 (the ImageNet and CIFAR
  setting of SimCLR, BYOL, Barlow Twins and VICReg) and (0.2, 1) for smaller ones, such as
  28x28 (Fashion-)MNIST: there an 8% crop is about 8x8 pixels, often only background or a
  featureless patch of the centred object, which makes positives that share nothing. (0.2, 1)
  keeps at least ~12x12 pixels and is MoCo v2's / SimSiam's setting anyway.
- ``blur_kernel_size=None`` takes about 10% of the crop side, odd, at least 3 (SimCLR's
  rule: 23 for 224 px, 3 for 28-32 px).

Every view is: random resized crop -> horizontal flip -> colour jitter -> grayscale -> blur
-> solarize -> (normalise). Steps whose probability is 0 are left out. On 1-channel images,
saturation, hue and grayscale are no-ops.
"""

from __future__ import annotations

from collections.abc import Sequence

from metricssl.augment.blur import GaussianBlur
from metricssl.augment.checks import (
    check_probabilities,
    check_probability,
    check_range,
    check_size,
)
from metricssl.augment.color import ColorJitter, RandomGrayscale
from metricssl.augment.compose import Compose, MultiView
from metricssl.augment.crop import RandomResizedCrop
from metricssl.augment.flip import RandomHorizontalFlip
from metricssl.augment.normalize import Normalize
from metricssl.augment.solarize import RandomSolarize
from metricssl.core.validation import check_number

Size = int | tuple[int, int]
Range = tuple[float, float]
Jitter = float | tuple[float, float]
PerView = float | Sequence[float]


def default_crop_scale(image_size: Size) -> Range:
    """(0.2, 1) below 32 px (see the module docstring for why), (0.08, 1) from 32 px up."""
    return (0.2, 1.0) if min(check_size("image_size", image_size)) < 32 else (0.08, 1.0)


def default_blur_kernel_size(size: Size) -> int:
    """About 10% of the smaller side, odd, at least 3."""
    side = min(check_size("size", size))
    return max(3, int(0.1 * side) // 2 * 2 + 1)


def augmentation_view(
    size: Size,
    *,
    crop_scale: Range = (0.08, 1.0),
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.4,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: float = 0.0,
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> Compose:
    """One view's pipeline: crop -> flip -> jitter -> grayscale -> blur -> solarize -> normalise.

    The building block of every recipe; arguments are checked here under these names.

    Example:
        >>> import torch
        >>> view = augmentation_view(24, crop_scale=(0.2, 1.0), blur_p=0.0)
        >>> view(torch.zeros(4, 1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([4, 1, 24, 24])
    """
    size = check_size("size", size)
    crop_scale = check_range("crop_scale", crop_scale, low=0.0, high=1.0, low_inclusive=False)
    crop_ratio = check_range("crop_ratio", crop_ratio, low=0.0, low_inclusive=False)
    for name, p in (
        ("flip_p", flip_p),
        ("jitter_p", jitter_p),
        ("grayscale_p", grayscale_p),
        ("blur_p", blur_p),
        ("solarize_p", solarize_p),
    ):
        check_probability(name, p)
    blur_sigma = check_range("blur_sigma", blur_sigma, low=0.0, low_inclusive=False)
    if blur_kernel_size is None:
        blur_kernel_size = default_blur_kernel_size(size)
    check_number("blur_kernel_size", blur_kernel_size, low=1, integer=True)
    if blur_kernel_size % 2 == 0:
        raise ValueError(f"blur_kernel_size must be odd, got {blur_kernel_size}")
    check_number("solarize_threshold", solarize_threshold, low=0.0, high=1.0)
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together (or both left as None)")

    steps = [RandomResizedCrop(size, crop_scale, crop_ratio, interpolation)]
    if flip_p > 0:
        steps.append(RandomHorizontalFlip(flip_p))
    if jitter_p > 0:
        steps.append(ColorJitter(brightness, contrast, saturation, hue, p=jitter_p))
    if grayscale_p > 0:
        steps.append(RandomGrayscale(grayscale_p))
    if blur_p > 0:
        steps.append(GaussianBlur(blur_kernel_size, blur_sigma, p=blur_p))
    if solarize_p > 0:
        steps.append(RandomSolarize(solarize_threshold, p=solarize_p))
    if mean is not None:
        steps.append(Normalize(mean, std))
    return Compose(steps)


# The arguments every recipe hands unchanged to augmentation_view (the others are per view).
_SHARED_OPTIONS = (
    "crop_ratio",
    "interpolation",
    "flip_p",
    "jitter_p",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "grayscale_p",
    "blur_sigma",
    "blur_kernel_size",
    "solarize_threshold",
    "mean",
    "std",
)


def light_view(
    image_size: Size, crop_scale: Range, flip_p: float, mean, std, **options
) -> MultiView:
    """One lightly augmented view per image, for the pretext and reconstruction tasks: a
    random resized crop and a flip, no colour jitter, grayscale or blur unless ``options``
    (:func:`augmentation_view`'s arguments) turn them on."""
    light = {"jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, **options}
    view = augmentation_view(
        image_size, crop_scale=crop_scale, flip_p=flip_p, mean=mean, std=std, **light
    )
    return MultiView([view])


def _view_options(arguments: dict) -> dict:
    return {name: arguments[name] for name in _SHARED_OPTIONS}


def _views(
    image_size: Size,
    n_views: int,
    crop_scale: Range | None,
    blur_p: PerView,
    solarize_p: PerView,
    options: dict,
) -> MultiView:
    check_number("n_views", n_views, low=1, integer=True)
    size = check_size("image_size", image_size)
    if crop_scale is None:
        crop_scale = default_crop_scale(size)
    blur = check_probabilities("blur_p", blur_p, n_views)
    solarize = check_probabilities("solarize_p", solarize_p, n_views)
    return MultiView(
        [
            augmentation_view(
                size, crop_scale=crop_scale, blur_p=blur[i], solarize_p=solarize[i], **options
            )
            for i in range(n_views)
        ]
    )


def simclr_views(
    image_size: Size,
    *,
    n_views: int = 2,
    crop_scale: Range | None = None,
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.4,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: PerView = 0.5,
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: PerView = 0.0,
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiView:
    """SimCLR's views (Chen, Kornblith, Norouzi, Hinton, "A simple framework for contrastive
    learning of visual representations", ICML 2020): ``n_views`` identically distributed views
    with crop, flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2 and
    Gaussian blur p = 0.5.

    Args:
        image_size: output size of every view, int or (height, width).
        n_views: number of views (2 in the paper).
        crop_scale: crop area range; None picks (0.08, 1), or (0.2, 1) below 32 px.
        blur_p, solarize_p: a probability for all views, or one per view.
        mean, std: optional per-channel normalisation, both or neither.
        The others set the crop, flip, jitter, grayscale, blur and solarize steps
        (see :func:`augmentation_view`).

    Example:
        >>> import torch
        >>> recipe = simclr_views(28)
        >>> views = recipe(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
        >>> [tuple(v.shape) for v in views]
        [(8, 1, 28, 28), (8, 1, 28, 28)]
    """
    options = _view_options(locals())
    return _views(image_size, n_views, crop_scale, blur_p, solarize_p, options)


def moco_v2_views(
    image_size: Size,
    *,
    crop_scale: Range | None = (0.2, 1.0),
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.4,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: PerView = 0.5,
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: PerView = 0.0,
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiView:
    """MoCo v2's two views (Chen, Fan, Girshick, He, "Improved baselines with momentum
    contrastive learning", arXiv:2003.04297, 2020): crop scale (0.2, 1), flip, jitter
    (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2, blur p = 0.5.

    Arguments as in :func:`simclr_views` (``crop_scale=None`` picks the size-based default).

    Example:
        >>> import torch
        >>> views = moco_v2_views(32)(torch.rand(4, 3, 32, 32))
        >>> len(views), tuple(views[0].shape)
        (2, (4, 3, 32, 32))
    """
    options = _view_options(locals())
    return _views(image_size, 2, crop_scale, blur_p, solarize_p, options)


def simsiam_views(
    image_size: Size,
    *,
    crop_scale: Range | None = (0.2, 1.0),
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.4,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: PerView = 0.5,
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: PerView = 0.0,
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiView:
    """SimSiam's two views (Chen, He, "Exploring simple Siamese representation learning",
    CVPR 2021), which are MoCo v2's: crop scale (0.2, 1), flip, jitter (0.4, 0.4, 0.4, 0.1)
    with p = 0.8, grayscale p = 0.2, blur p = 0.5.

    Arguments as in :func:`simclr_views`.

    Example:
        >>> import torch
        >>> views = simsiam_views(28)(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
        >>> len(views)
        2
    """
    options = _view_options(locals())
    return _views(image_size, 2, crop_scale, blur_p, solarize_p, options)


def byol_views(
    image_size: Size,
    *,
    crop_scale: Range | None = None,
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.2,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: PerView = (1.0, 0.1),
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: PerView = (0.0, 0.2),
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiView:
    """BYOL's asymmetric views (Grill et al., "Bootstrap your own latent: a new approach to
    self-supervised learning", NeurIPS 2020): crop, flip, jitter (0.4, 0.4, 0.2, 0.1) with
    p = 0.8, grayscale p = 0.2; view 1 always blurred and never solarized, view 2 blurred with
    p = 0.1 and solarized with p = 0.2.

    Arguments as in :func:`simclr_views`; ``blur_p`` and ``solarize_p`` are per view.

    Example:
        >>> import torch
        >>> recipe = byol_views(28)
        >>> len(recipe(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)))
        2
    """
    options = _view_options(locals())
    return _views(image_size, 2, crop_scale, blur_p, solarize_p, options)


def barlow_twins_views(
    image_size: Size,
    *,
    crop_scale: Range | None = None,
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.2,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: PerView = (1.0, 0.1),
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: PerView = (0.0, 0.2),
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiView:
    """Barlow Twins' views (Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: self-supervised
    learning via redundancy reduction", ICML 2021), which are BYOL's: view 1 blur p = 1 and no
    solarize, view 2 blur p = 0.1 and solarize p = 0.2.

    Arguments as in :func:`simclr_views`; ``blur_p`` and ``solarize_p`` are per view.

    Example:
        >>> import torch
        >>> len(barlow_twins_views(32)(torch.rand(4, 3, 32, 32)))
        2
    """
    options = _view_options(locals())
    return _views(image_size, 2, crop_scale, blur_p, solarize_p, options)


def vicreg_views(
    image_size: Size,
    *,
    crop_scale: Range | None = None,
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.2,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    blur_p: PerView = (1.0, 0.1),
    blur_sigma: Range = (0.1, 2.0),
    blur_kernel_size: int | None = None,
    solarize_p: PerView = (0.0, 0.2),
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiView:
    """VICReg's views (Bardes, Ponce, LeCun, "VICReg: variance-invariance-covariance
    regularization for self-supervised learning", ICLR 2022), which follow BYOL's: view 1
    blur p = 1 and no solarize, view 2 blur p = 0.1 and solarize p = 0.2.

    Arguments as in :func:`simclr_views`; ``blur_p`` and ``solarize_p`` are per view.

    Example:
        >>> import torch
        >>> len(vicreg_views(28)(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)))
        2
    """
    options = _view_options(locals())
    return _views(image_size, 2, crop_scale, blur_p, solarize_p, options)


# Method name -> recipe, for trainers and the command line.
RECIPES = {
    "simclr": simclr_views,
    "moco_v2": moco_v2_views,
    "simsiam": simsiam_views,
    "byol": byol_views,
    "barlow_twins": barlow_twins_views,
    "vicreg": vicreg_views,
}
