"""The Trainer's typed builders: the model, the optimiser and its schedule, each on its own.

The Trainer reads its data with :func:`~metricssl.ssl.datasets.resolve_data`, then calls
these in order; each can be used alone to see or change one piece.

    >>> from metricssl.ssl.builders import build_model, build_optimizer, training_settings
    >>> from metricssl.ssl.datasets import resolve_data
    >>> data = resolve_data("digits", None, "train", False, 0)  # doctest: +SKIP
    >>> model = build_model("simclr", data, hparams={"temperature": 0.1})  # doctest: +SKIP
    >>> settings = training_settings("simclr", lr=1e-3)
    >>> settings.optimizer, settings.lr
    ('adamw', 0.001)
    >>> optimizer = build_optimizer(model.method, settings)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from .datasets import ImageData
from .lars import LARS
from .method import SSLMethod
from .registry import (
    CUSTOM_TRAINING,
    METHODS,
    TrainingDefaults,
    build_method,
    canonical_method_name,
    method_hparams,
)
from .schedule import WarmupCosineSchedule

# Images used to estimate the per-channel normalisation.
_STATS_IMAGES = 10_000


def plain(value):
    """``value`` if it survives ``torch.load(weights_only=True)`` and a CSV (numbers,
    strings, None, lists and dicts of them), else a TypeError: a checkpoint config holds
    nothing else."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    raise TypeError(
        f"{value!r} ({type(value).__name__}) cannot be stored in a checkpoint config; "
        f"use plain numbers, strings, lists or dicts"
    )


def channel_stats(data: ImageData, indices: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the images (in [0, 1]) at ``indices``."""
    total, sq, count = None, None, 0
    for images, _ in data.batches(indices, 1024):
        x = images.to(torch.float64)
        if images.dtype == torch.uint8:
            x = x / 255.0
        s = x.sum(dim=(0, 2, 3))
        q = x.pow(2).sum(dim=(0, 2, 3))
        total, sq = (s, q) if total is None else (total + s, sq + q)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (sq / count - mean.pow(2)).clamp(min=1e-12).sqrt()
    return [round(float(m), 6) for m in mean], [round(max(float(s), 1e-3), 6) for s in std]


class Model(NamedTuple):
    """What :func:`build_model` gives: the method, its registry name, and ``build_config``,
    the plain dict a checkpoint stores to rebuild it (None for a ready-made method)."""

    method: SSLMethod
    name: str
    build_config: dict | None


def build_model(
    method: str | SSLMethod,
    data: ImageData,
    *,
    backbone: str | nn.Module | None = None,
    backbone_kwargs: Mapping | None = None,
    hparams: Mapping | None = None,
    num_classes: int | None = None,
) -> Model:
    """The method to train on ``data`` (the training split), checked against it.

    A name builds the registry's method (:func:`~metricssl.ssl.registry.build_method`) with
    its heads and recipe, normalised with the channel statistics of up to 10,000 of the
    images (drawn with the global torch generator); a ready :class:`SSLMethod` is used as
    it is; ``backbone=None`` builds the method's own (``small_cnn``; ``vit_tiny`` for MAE).
    Either way the method must fit the data: the image shape it was built for, the labels it
    needs, the training-set size its loss needs.
    """
    if isinstance(method, SSLMethod):
        if hparams:
            raise ValueError("hparams cannot be applied to a ready-made method")
        built, name, build_config = method, method.name, None
    else:
        name = canonical_method_name(method)
        if backbone is None:
            backbone = METHODS[name].backbone
        stats_idx = torch.randperm(len(data))[:_STATS_IMAGES]
        mean, std = channel_stats(data, stats_idx)
        build_config = {
            "method": name,
            "input_shape": list(data.input_shape),
            "backbone": backbone if isinstance(backbone, str) else None,
            "backbone_kwargs": plain(dict(backbone_kwargs or {})),
            "hparams": plain(method_hparams(name, hparams)),
            "mean": mean,
            "std": std,
            "num_classes": num_classes,
            "num_samples": len(data),
        }
        built = build_method(
            name,
            data.input_shape,
            backbone=backbone,
            backbone_kwargs=backbone_kwargs,
            hparams=build_config["hparams"],
            mean=mean,
            std=std,
            num_classes=num_classes,
            num_samples=len(data),
        )
    built.check_dataset_size(len(data))
    if built.input_shape is not None and built.input_shape != tuple(data.input_shape):
        raise ValueError(
            f"the dataset's images have shape (C, H, W) = {tuple(data.input_shape)} but the "
            f"method was built for {built.input_shape}"
        )
    if built.needs_labels and data.labels is None:
        raise ValueError(f"method {name!r} needs labels, and the dataset has none")
    return Model(built, name, build_config)


def training_settings(method: str | SSLMethod, **given) -> TrainingDefaults:
    """The method's :class:`~metricssl.ssl.registry.TrainingDefaults` with the settings
    ``given`` (``optimizer``, ``lr``, ``weight_decay``, ``batch_size``, ``warmup_epochs``;
    None keeps the default). A ready-made method the registry does not know gets
    :data:`~metricssl.ssl.registry.CUSTOM_TRAINING`."""
    name = method.name if isinstance(method, SSLMethod) else canonical_method_name(method)
    spec = METHODS.get(name)
    defaults = spec.training if spec is not None else CUSTOM_TRAINING
    return dataclasses.replace(defaults, **{k: v for k, v in given.items() if v is not None})


def build_optimizer(method: SSLMethod, settings: TrainingDefaults) -> torch.optim.Optimizer:
    """The optimiser of ``settings`` over the method's parameter groups: ``sgd`` and ``lars``
    with momentum 0.9, ``adam``, ``adamw``."""
    groups = method.param_groups()
    lr, wd = float(settings.lr), float(settings.weight_decay)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=wd)
    if settings.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    return LARS(groups, lr=lr, momentum=0.9, weight_decay=wd)


def build_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    final_lr_factor: float,
) -> WarmupCosineSchedule:
    """Linear warmup over ``warmup_steps`` (at most ``total_steps - 1``), then cosine decay
    to ``lr * final_lr_factor`` at ``total_steps``."""
    return WarmupCosineSchedule(
        optimizer, total_steps, min(warmup_steps, total_steps - 1), final_lr_factor
    )
