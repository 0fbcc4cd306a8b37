"""Batched, on-device image augmentation for self-supervised learning.

Whole batches (N, C, H, W), uint8 or float in [0, 1], are augmented at once with per-sample
random parameters, on the device they are on; every transform takes an optional
``torch.Generator`` for reproducible runs. Recipes build the views each method trains on:

    >>> import torch
    >>> from metricssl.augment import simclr_views
    >>> views = simclr_views(28)(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
    >>> len(views), views[0].dtype
    (2, torch.float32)
"""

from metricssl.augment.base import RandomTransform
from metricssl.augment.blur import GaussianBlur
from metricssl.augment.color import ColorJitter, RandomGrayscale
from metricssl.augment.compose import Compose, MultiView
from metricssl.augment.convert import ToFloat, to_float_images
from metricssl.augment.crop import RandomResizedCrop
from metricssl.augment.flip import RandomHorizontalFlip
from metricssl.augment.multi_crop import MultiCrop, multi_crop
from metricssl.augment.normalize import Normalize
from metricssl.augment.recipes import (
    RECIPES,
    augmentation_view,
    barlow_twins_views,
    byol_views,
    default_blur_kernel_size,
    default_crop_scale,
    moco_v2_views,
    simclr_views,
    simsiam_views,
    vicreg_views,
)
from metricssl.augment.solarize import RandomSolarize

__all__ = [
    "RECIPES",
    "ColorJitter",
    "Compose",
    "GaussianBlur",
    "MultiCrop",
    "MultiView",
    "Normalize",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomSolarize",
    "RandomTransform",
    "ToFloat",
    "augmentation_view",
    "barlow_twins_views",
    "byol_views",
    "default_blur_kernel_size",
    "default_crop_scale",
    "moco_v2_views",
    "multi_crop",
    "simclr_views",
    "simsiam_views",
    "to_float_images",
    "vicreg_views",
]
