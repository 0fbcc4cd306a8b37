"""Multi-crop: two large global views and ``n_local`` small local views of each image."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metricssl.augment.checks import check_probabilities, check_probability, check_range, check_size
from metricssl.augment.compose import MultiView
from metricssl.augment.recipes import Jitter, Range, Size, augmentation_view
from metricssl.core.validation import check_number


class MultiCrop(MultiView):
    """A :class:`MultiView` whose first ``n_global`` views are global crops and the rest local
    crops; it refuses images smaller than its crops. Built by :func:`multi_crop`."""

    def __init__(
        self,
        views: Sequence[torch.nn.Module],
        n_global: int,
        global_size: tuple[int, int],
        local_size: tuple[int, int],
    ) -> None:
        super().__init__(views)
        self.n_global = n_global
        self.n_local = len(views) - n_global
        self.global_size = global_size
        self.local_size = local_size

    def check_input(self, images: torch.Tensor) -> None:
        h, w = images.shape[-2:]
        for name, (ch, cw) in (("global_size", self.global_size), ("local_size", self.local_size)):
            if ch > h or cw > w:
                raise ValueError(
                    f"{name} {ch}x{cw} is larger than the {h}x{w} images; multi-crop views "
                    "must not be larger than the image"
                )


def multi_crop(
    global_size: Size,
    local_size: Size,
    n_local: int = 6,
    *,
    image_size: Size | None = None,
    global_scale: Range = (0.4, 1.0),
    local_scale: Range = (0.05, 0.4),
    crop_ratio: Range = (3.0 / 4.0, 4.0 / 3.0),
    interpolation: str = "bilinear",
    flip_p: float = 0.5,
    jitter_p: float = 0.8,
    brightness: Jitter = 0.4,
    contrast: Jitter = 0.4,
    saturation: Jitter = 0.2,
    hue: Jitter = 0.1,
    grayscale_p: float = 0.2,
    global_blur_p: float | Sequence[float] = (1.0, 0.1),
    local_blur_p: float = 0.5,
    blur_sigma: Range = (0.1, 2.0),
    global_solarize_p: float | Sequence[float] = (0.0, 0.2),
    solarize_threshold: float = 0.5,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> MultiCrop:
    """Multi-crop views: 2 global crops of ``global_size`` then ``n_local`` local crops of
    ``local_size`` (Caron et al., "Unsupervised learning of visual features by contrasting
    cluster assignments" (SwAV), NeurIPS 2020; Caron et al., "Emerging properties in
    self-supervised vision transformers" (DINO), ICCV 2021).

    Defaults are DINO's: global crops scale (0.4, 1), local crops (0.05, 0.4); jitter
    (0.4, 0.4, 0.2, 0.1) with p = 0.8 and grayscale p = 0.2 everywhere; global view 1 always
    blurred, global view 2 blurred with p = 0.1 and solarized with p = 0.2; local views blurred
    with p = 0.5. Blur kernels are ~10% of each crop's side (at least 3).

    Args:
        global_size, local_size: crop output sizes, int or (height, width); neither may be
            larger than ``image_size``.
        n_local: number of local crops (>= 0).
        image_size: size of the input images; defaults to ``global_size``. Images smaller
            than a crop are refused at call time too.
        global_scale, local_scale: area ranges of the two kinds of crops, in (0, 1], ordered.
        global_blur_p, global_solarize_p: per global view (a number for both, or a pair).
        The others as in :func:`~metricssl.augment.recipes.simclr_views`.

    Example:
        >>> import torch
        >>> recipe = multi_crop(28, 12, n_local=4)
        >>> views = recipe(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
        >>> [v.shape[-1] for v in views]
        [28, 28, 12, 12, 12, 12]
    """
    global_size = check_size("global_size", global_size)
    local_size = check_size("local_size", local_size)
    check_number("n_local", n_local, low=0, integer=True)
    image_size = global_size if image_size is None else check_size("image_size", image_size)
    for name, size in (("global_size", global_size), ("local_size", local_size)):
        if size[0] > image_size[0] or size[1] > image_size[1]:
            raise ValueError(
                f"{name} {size} is larger than image_size {image_size}: crops must not be "
                "larger than the image"
            )
    global_scale = check_range("global_scale", global_scale, low=0.0, high=1.0, low_inclusive=False)
    local_scale = check_range("local_scale", local_scale, low=0.0, high=1.0, low_inclusive=False)
    global_blur = check_probabilities("global_blur_p", global_blur_p, 2)
    global_solarize = check_probabilities("global_solarize_p", global_solarize_p, 2)
    check_probability("local_blur_p", local_blur_p)

    shared = dict(
        crop_ratio=crop_ratio,
        interpolation=interpolation,
        flip_p=flip_p,
        jitter_p=jitter_p,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        hue=hue,
        grayscale_p=grayscale_p,
        blur_sigma=blur_sigma,
        solarize_threshold=solarize_threshold,
        mean=mean,
        std=std,
    )
    views = [
        augmentation_view(
            global_size,
            crop_scale=global_scale,
            blur_p=global_blur[i],
            solarize_p=global_solarize[i],
            **shared,
        )
        for i in range(2)
    ]
    views += [
        augmentation_view(local_size, crop_scale=local_scale, blur_p=local_blur_p, **shared)
        for _ in range(n_local)
    ]
    return MultiCrop(views, n_global=2, global_size=global_size, local_size=local_size)
