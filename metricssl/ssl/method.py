"""SSLMethod: what every training method (SimCLR, MoCo, BYOL, ...) gives the Trainer."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..augment.multi_crop import MultiCrop
from ..core.common import adopt_stored_shapes  # noqa: F401 (moco, deepcluster use it from here)
from ..core.validation import check_bool, check_choice, check_module, check_number
from .datasets import ImageData
from .schedule import cosine_momentum


def param(
    default: Any,
    *,
    choices: Sequence | None = None,
    check: Callable[[str, Any], None] | None = None,
    **number_rule,
) -> Any:
    """A :class:`CheckedConfig` field: its default and the check that a value must pass.

    ``check(name, value)`` if given; else a bool default is checked as a flag, ``choices`` as
    one of them, anything else with :func:`~metricssl.core.validation.check_number` and
    ``number_rule`` (``low``, ``high``, ``integer``, ``allow_none``, ...).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Config(MethodConfig):
        ...     temperature: float = param(0.2, low=0, low_inclusive=False)
        >>> Config.temperature, Config(temperature=0.5).temperature
        (0.2, 0.5)
    """
    if check is None and isinstance(default, bool):
        check = check_bool
    elif check is None and choices is not None:
        check = partial(check_choice, choices=tuple(choices))
    elif check is None:
        check = partial(check_number, **number_rule)
    return dataclasses.field(default=default, metadata={"check": check})


@dataclasses.dataclass(frozen=True)
class CheckedConfig:
    """A frozen dataclass whose fields made with :func:`param` are checked when an instance
    is made: a bad value is refused with the field's name."""

    def __post_init__(self) -> None:
        type(self).check(**self.as_dict())

    @classmethod
    def check(cls, **values) -> None:
        """Check ``values`` by the rules of the fields of those names: what a method's
        constructor calls with the arguments it shares with its config, so that each rule is
        written once."""
        rules = {f.name: f.metadata.get("check") for f in dataclasses.fields(cls)}
        for name, value in values.items():
            if rules[name] is not None:
                rules[name](name, value)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what a checkpoint stores)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class MethodConfig(CheckedConfig):
    """A method's hyper-parameters, typed and checked: the one source of their defaults.

    Each method module defines a frozen subclass (``SimCLRConfig``, ...) whose fields are the
    method's constructor arguments and the widths of the heads the registry builds for it.
    The method's constructor takes its defaults from these fields, and the registry
    (:data:`~metricssl.ssl.registry.METHODS`) builds the method from an instance, so the two
    cannot disagree. Every field is checked when an instance is made, before any model is
    built.

    Example:
        >>> from metricssl.ssl.simclr import SimCLRConfig
        >>> SimCLRConfig(temperature=0.1).as_dict()
        {'proj_hidden_dim': 512, 'proj_output_dim': 128, 'temperature': 0.1}
        >>> SimCLRConfig(temperature=0)
        Traceback (most recent call last):
        ...
        metricssl.core.validation.ArgumentError: temperature must be > 0, got 0
    """

    def method_kwargs(
        self, method_cls: type, *, feature_dim: int, num_classes: int | None
    ) -> dict[str, Any]:
        """The fields ``method_cls``'s constructor takes (the heads' widths go to the heads
        builder instead). A config whose arguments depend on the data (a loss with one
        proxy per class) builds them here from ``feature_dim`` and ``num_classes``."""
        params = inspect.signature(method_cls.__init__).parameters
        return {k: v for k, v in self.as_dict().items() if k in params}


class Batch(NamedTuple):
    """One training batch as a method sees it.

    ``views``: the augmented views, float (B, C, H, W) tensors on the training device (one
    per view of the method's recipe). ``labels``: int64 (B,) class labels, or None.
    ``indices``: int64 (B,) positions of the images in the training split (the Trainer fills
    it), which methods with a per-sample memory bank (NPID) need; None otherwise.
    """

    views: list[torch.Tensor]
    labels: torch.Tensor | None = None
    indices: torch.Tensor | None = None


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module``: the momentum (target/key) encoder's initial state."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online``, parameter by parameter.

    Buffers (BatchNorm running statistics) are not averaged: the momentum encoder keeps its
    own, accumulated from the batches it sees, as in MoCo and BYOL.
    """
    t = list(target.parameters())
    o = [p.detach() for p in online.parameters()]
    if len(t) != len(o):
        raise ValueError("target and online modules have different parameters")
    torch._foreach_lerp_(t, o, 1.0 - momentum)


class MomentumConfigMixin:
    """A :class:`MethodConfig` mixin for a momentum schedule's two fields, ``momentum`` and
    ``final_momentum`` (each declared by the config, with its own default): ``final_momentum``
    must lie in ``[momentum, 1]``. ``momentum=None`` (no momentum encoder) skips the check.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class Config(MomentumConfigMixin, MethodConfig):
        ...     momentum: float = param(0.99, low=0, high=1)
        ...     final_momentum: float = param(1.0, low=0, high=1)
        >>> Config(momentum=0.9, final_momentum=0.5)
        Traceback (most recent call last):
        ...
        metricssl.core.validation.ArgumentError: final_momentum must be >= 0.9, got 0.5
    """

    @classmethod
    def check(cls, **values) -> None:
        super().check(**values)
        if values.get("momentum") is not None and "final_momentum" in values:
            low = values["momentum"]
            check_number("final_momentum", values["final_momentum"], low=low, high=1)


class MomentumTargets:
    """An :class:`SSLMethod` mixin for momentum targets (BYOL's target, MoCo v3's key encoder,
    DINO's teacher): frozen copies of some of the method's modules that follow them, after
    every optimizer step, as an exponential moving average whose momentum rises on a cosine
    from ``base_momentum`` to ``final_momentum`` over training
    (:func:`~metricssl.ssl.schedule.cosine_momentum`).

    ``momentum_targets`` maps each target's attribute to the attribute of the online module it
    follows; :meth:`init_momentum_targets` makes the copies (in that order, which is their
    order in the state dict).

    Example:
        >>> from torch import nn
        >>> class Method(MomentumTargets, SSLMethod):
        ...     momentum_targets = {"target_backbone": "backbone"}
        ...     def __init__(self, backbone):
        ...         super().__init__(backbone, feature_dim=4)
        ...         self.init_momentum_targets(momentum=0.9, final_momentum=1.0)
        >>> method = Method(nn.Linear(4, 4))
        >>> method.current_momentum(0, 10), method.current_momentum(10, 10)
        (0.9, 1.0)
        >>> method.on_step_end(1, 10)  # the EMA update of target_backbone
    """

    #: target attribute -> the attribute of the online module it follows.
    momentum_targets: ClassVar[dict[str, str]] = {}

    def init_momentum_targets(self, momentum: float, final_momentum: float) -> None:
        """Copy each online module into its target and keep the momentum schedule's ends."""
        for target, online in self.momentum_targets.items():
            setattr(self, target, momentum_copy(getattr(self, online)))
        self.base_momentum = float(momentum)
        self.final_momentum = float(final_momentum)

    def current_momentum(self, step: int, total_steps: int) -> float:
        """The targets' momentum after optimizer step ``step`` of ``total_steps``."""
        return cosine_momentum(step, total_steps, self.base_momentum, self.final_momentum)

    def on_step_end(self, step: int, total_steps: int) -> None:
        m = self.current_momentum(step, total_steps)
        for target, online in self.momentum_targets.items():
            ema_update(getattr(self, target), getattr(self, online), m)


def check_multi_crop_views(views, input_shape, n_global: int = 2) -> None:
    """A multi-crop recipe for SwAV or DINO: at least ``n_global`` views, exactly
    ``n_global`` global crops for a :class:`~metricssl.augment.MultiCrop`, and (with
    ``input_shape``) no crop larger than the image, checked now rather than at the first
    batch."""
    n_views = getattr(views, "n_views", None)
    if n_views is not None and n_views < n_global:
        raise ValueError(
            f"views must make at least {n_global} crops ({n_global} global), it makes {n_views}"
        )
    if isinstance(views, MultiCrop) and views.n_global != n_global:
        raise ValueError(f"views must have {n_global} global crops, it has {views.n_global}")
    if input_shape is not None and hasattr(views, "check_input"):
        try:
            views.check_input(torch.empty((0, *input_shape)))
        except ValueError as error:
            raise ValueError(f"views do not fit input_shape {input_shape}: {error}") from None


def features_by_size(backbone: nn.Module, views: Sequence[torch.Tensor]) -> torch.Tensor:
    """The backbone's features of every crop, in order: one pass per run of same-size crops
    (the global crops, then the local ones), concatenated."""
    features, start = [], 0
    while start < len(views):
        stop = start + 1
        while stop < len(views) and views[stop].shape == views[start].shape:
            stop += 1
        features.append(backbone(torch.cat(list(views[start:stop]))))
        start = stop
    return torch.cat(features)


class SSLMethod(nn.Module):
    """The base of every method: a backbone, heads, a loss and an augmentation recipe.

    A method is an ``nn.Module`` whose state (backbone, heads, momentum encoders, queues as
    registered buffers) is all in ``state_dict()``, so a checkpoint of it resumes exactly.

    What the Trainer calls:

    - ``views(images, generator)``: the augmentation recipe, uint8 (or [0, 1] float) images
      -> list of float views (the method's ``num_views`` of them);
    - ``forward(batch)`` = ``training_step(batch)``: a :class:`Batch` -> dict with a scalar
      ``loss`` (with gradient) and any detached scalars to log; going through ``forward``
      lets DistributedDataParallel synchronise gradients;
    - ``on_epoch_start(epoch, data)``: before each epoch, with the training split
      (DeepCluster re-clusters it);
    - ``on_step_end(step, total_steps)``: after each optimizer step (momentum updates);
    - ``embed(images)``: the backbone's features of clean (un-augmented) images, for kNN
      monitoring, evaluation and indexing.

    Args:
        backbone: any module mapping (B, C, H, W) float images to (B, feature_dim) features.
        feature_dim: the backbone's output width (recorded for users of :meth:`embed`).
        views: the augmentation recipe, a callable ``(images, generator) -> list[Tensor]``.
        preprocess: the clean transform used by :meth:`embed` (uint8 -> normalised float),
            the same conversion and normalisation the recipe ends with.
        input_shape: (C, H, W) the backbone expects; images of another shape are refused.

    Class attributes (per method): ``name``; ``min_batch_size`` (the smallest batch the loss
    is defined for); ``needs_labels`` (the Trainer refuses data without labels);
    ``num_views``; ``sync_batchnorm`` (convert BatchNorm to SyncBatchNorm under DDP so batch
    statistics are global, where it matters). How the Trainer draws batches is the method's
    :meth:`samples_per_class_in`. The Trainer asks only these: it has no case for any one
    method.
    """

    name: ClassVar[str] = ""
    min_batch_size: ClassVar[int] = 2
    needs_labels: ClassVar[bool] = False
    num_views: ClassVar[int] = 2
    sync_batchnorm: ClassVar[bool] = True

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        check_module("backbone", backbone)
        check_number("feature_dim", feature_dim, low=1, integer=True, allow_none=True)
        for arg, value in (("views", views), ("preprocess", preprocess)):
            if value is not None and not callable(value):
                raise TypeError(f"{arg} must be callable or None, got {type(value).__name__}")
        if input_shape is not None:
            input_shape = tuple(int(s) for s in input_shape)
            if len(input_shape) != 3 or min(input_shape) < 1:
                raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        self.backbone = backbone
        self.feature_dim = feature_dim
        # Plain attributes, not submodules: recipes hold no learnable state.
        self.__dict__["views"] = views
        self.__dict__["preprocess"] = preprocess
        self.input_shape = input_shape

    # -- what the Trainer calls ---------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.training_step(batch)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement training_step")

    def check_dataset_size(self, num_samples: int) -> None:
        """Refuse a training set too small for the method (called by the Trainer)."""

    def on_epoch_start(self, epoch: int, data: ImageData) -> None:
        """Called before training epoch ``epoch`` (0-based) starts, with the training split
        (``data.batches(indices, batch_size)`` yields its uint8 images in order)."""

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Called after optimizer step ``step`` (1-based) of ``total_steps``."""

    def samples_per_class_in(self, batch_size: int, num_classes: int | None) -> int | None:
        """Images of each class in every batch the Trainer draws, for a (global) batch of
        ``batch_size`` images of ``num_classes`` classes (None: the data have no labels);
        None, the default, draws batches uniformly at random.

        A method whose loss needs positives in every batch (``Supervised``) returns its
        ``m``; the Trainer then draws batches as
        :class:`~metricssl.samplers.MPerClassSampler` does.
        """
        return None

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups: every trainable parameter in one group.

        A method may split them; a group with ``"fixed_lr": True`` keeps its learning rate
        through the schedule (no warmup, no decay).
        """
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def make_views(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Apply the method's augmentation recipe to a batch of images."""
        if self.views is None:
            raise ValueError(f"{type(self).__name__} has no augmentation recipe (views=None)")
        self.check_images(images)
        out = self.views(images, generator)
        views = list(out) if isinstance(out, (list, tuple)) else [out]
        if len(views) < self.num_views:
            raise ValueError(
                f"{type(self).__name__} needs {self.num_views} views per image, its recipe "
                f"gave {len(views)}"
            )
        return views

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of clean images (no augmentation, no gradient, mode unchanged).

        ``images``: uint8 (N, C, H, W), or float already converted like the recipe's output.
        For a whole dataset in chunks, with the model in eval mode, use
        :func:`metricssl.ssl.embed.embed_dataset`.
        """
        self.check_images(images)
        return self.backbone(self.clean_images(images))

    def clean_images(self, images: torch.Tensor) -> torch.Tensor:
        """The recipe's conversion without augmentation (uint8 -> normalised float)."""
        return self.preprocess(images) if self.preprocess is not None else images.float()

    # -- checks -------------------------------------------------------------------------

    def check_images(self, images: torch.Tensor) -> None:
        """Refuse a batch that is not (N, C, H, W) of this method's input shape."""
        if not torch.is_tensor(images):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if self.input_shape is not None and tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"images have shape (C, H, W) = {tuple(images.shape[1:])} but this "
                f"{type(self).__name__} was built for {self.input_shape}"
            )

    def check_batch(self, batch: Batch) -> None:
        """Refuse a batch the loss is not defined for (too few views, rows or labels)."""
        if len(batch.views) < self.num_views:
            raise ValueError(
                f"{type(self).__name__} needs {self.num_views} views, got {len(batch.views)}"
            )
        n = batch.views[0].shape[0]
        if n < self.min_batch_size:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_batch_size} images per "
                f"batch (per process), got {n}"
            )
        if self.needs_labels and batch.labels is None:
            raise ValueError(f"{type(self).__name__} needs labels, the batch has none")
