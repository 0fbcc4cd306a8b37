"""Supervised metric learning in the same Trainer: any metricssl loss, an optional miner."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import losses as losses_module
from .. import miners as miners_module
from ..core.distributed import gather_with_grad, is_distributed
from ..core.validation import check_module, check_number
from ..losses.base_metric_loss_function import BaseMetricLossFunction
from ..losses.two_view_loss import TwoViewLoss
from ..miners.base_miner import BaseMiner
from .method import Batch, MethodConfig, SSLMethod, param


def _public_classes(module, base, exclude=()) -> dict[str, type]:
    """Exported concrete subclasses of ``base`` (base classes and ``exclude`` left out)."""
    return {
        name: obj
        for name in getattr(module, "__all__", dir(module))
        if isinstance(obj := getattr(module, name, None), type)
        and issubclass(obj, base)
        and not issubclass(obj, exclude)
        and not name.startswith(("Base", "Generic"))
    }


def _label_losses() -> dict[str, type]:
    # Two-view losses (VICReg, Barlow Twins, negative cosine) take no labels.
    return _public_classes(losses_module, BaseMetricLossFunction, exclude=(TwoViewLoss,))


def loss_names() -> list[str]:
    """Names of the losses :func:`make_loss` can build (``metricssl.losses`` exports)."""
    return sorted(_label_losses())


def miner_names() -> list[str]:
    """Names of the miners :func:`make_miner` can build (``metricssl.miners`` exports)."""
    return sorted(_public_classes(miners_module, BaseMiner))


def _by_name(kind: str, name, classes: dict[str, type]) -> type:
    if not isinstance(name, str) or name not in classes:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {sorted(classes)}")
    return classes[name]


def check_loss_name(name: str, value) -> None:
    """Refuse ``value`` unless :func:`make_loss` can build it (``name`` is the argument)."""
    _by_name("loss", value, _label_losses())


def check_miner_name(name: str, value) -> None:
    """Refuse ``value`` unless it is None or :func:`make_miner` can build it."""
    if value is not None:
        _by_name("miner", value, _public_classes(miners_module, BaseMiner))


def make_loss(name: str, num_classes: int | None = None, embedding_size: int | None = None):
    """A loss from ``metricssl.losses`` by class name, with its default arguments.

    Losses with class proxies or weights (``num_classes``, ``embedding_size`` in their
    signature, e.g. ProxyAnchorLoss, ArcFaceLoss) get those from the data and backbone.
    """
    cls = _by_name("loss", name, _label_losses())
    params = inspect.signature(cls).parameters
    kwargs = {}
    for arg, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if arg in params and params[arg].default is inspect.Parameter.empty:
            if value is None:
                raise ValueError(f"loss {name} needs {arg}")
            kwargs[arg] = int(value)
    required = [
        p
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.name not in kwargs
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise ValueError(
            f"loss {name} needs arguments the trainer cannot supply "
            f"({', '.join(p.name for p in required)}); build it yourself and pass loss=..."
        )
    return cls(**kwargs)


def make_miner(name: str):
    """A miner from ``metricssl.miners`` by class name, with its default arguments."""
    return _by_name("miner", name, _public_classes(miners_module, BaseMiner))()


def auto_samples_per_class(batch_size: int, num_classes: int) -> int:
    """``m`` for m-per-class batches: at least 4 (2 for batches under 8), enough that
    ``m * num_classes >= batch_size``, and a divisor of ``batch_size``.

    E.g. 256 images of 10 classes: m = 32 (8 classes per batch); of 100 classes: m = 4.
    """
    m = max(min(4, batch_size // 2), -(-batch_size // max(1, num_classes)), 1)
    while batch_size % m:
        m += 1
    return m


def _check_samples_per_class(name: str, value) -> None:
    if value != "auto":
        check_number(name, value, low=1, integer=True, allow_none=True)


@dataclass(frozen=True)
class SupervisedConfig(MethodConfig):
    """Supervised metric learning's hyper-parameters: the embedding, the loss, the miner and
    the batches' images per class.

    ``loss`` and ``miner`` are class names of :mod:`metricssl.losses` and
    :mod:`metricssl.miners` (``miner=None``: no miner); the default pair is
    MultiSimilarityLoss with its own MultiSimilarityMiner. ``embedding_dim`` is the width of
    a linear embedder on the backbone's features (None: the features themselves).

    Example:
        >>> from metricssl.ssl.supervised import SupervisedConfig
        >>> SupervisedConfig(loss="TripletMarginLoss", miner=None).miner is None
        True
    """

    embedding_dim: int | None = param(128, low=1, integer=True, allow_none=True)
    loss: str = param("MultiSimilarityLoss", check=check_loss_name)
    miner: str | None = param("MultiSimilarityMiner", check=check_miner_name)
    samples_per_class: int | str | None = param("auto", check=_check_samples_per_class)

    def method_kwargs(
        self, method_cls: type, *, feature_dim: int, num_classes: int | None
    ) -> dict[str, Any]:
        # Losses with class proxies or weights are sized by the data and the embedding.
        kwargs = super().method_kwargs(method_cls, feature_dim=feature_dim, num_classes=num_classes)
        embedding_size = self.embedding_dim or feature_dim
        kwargs["loss"] = make_loss(
            self.loss, num_classes=num_classes, embedding_size=embedding_size
        )
        return kwargs


def supervised_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """The registry's heads builder: a linear embedder (``embedding_dim``) on the pooled,
    non-negative (post-ReLU) features, as in PML's trunk + embedder recipe: it lets the loss
    use the whole sphere, not one orthant; none when ``embedding_dim`` is None."""
    dim = hparams.get("embedding_dim")
    return {} if dim is None else {"embedding_head": nn.Linear(feature_dim, int(dim))}


class Supervised(SSLMethod):
    """Metric learning with labels: ``loss(embeddings, labels, miner(embeddings, labels))``.

    One augmented view per image goes through the backbone (and an optional embedding
    head); the loss is any metricssl (PML-compatible) loss, the optional miner any metricssl
    miner. Batches are drawn ``samples_per_class`` images per class
    (:class:`~metricssl.samplers.MPerClassSampler` semantics) so every anchor has positives.
    Under DDP the embeddings and labels of every rank are gathered (with gradient) and the
    loss and miner see the global batch.

    Args:
        backbone: images -> features.
        loss: a loss module (e.g. ``MultiSimilarityLoss()``) or a loss class name.
        miner: a miner module, a miner class name, or None (no mining); default
            MultiSimilarityMiner, the default loss's own (see :class:`SupervisedConfig`).
        embedding_head: optional features -> embeddings module (the loss's space and what
            :meth:`embed` returns); None uses the backbone's features.
        samples_per_class: images of each class per batch (``m``); ``"auto"`` picks the
            smallest ``m >= 4`` (>= 2 for tiny batches) that divides the batch size and lets
            the classes fill a batch (see :func:`auto_samples_per_class`); None draws
            batches uniformly at random instead.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.supervised import Supervised
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = Supervised(backbone, "MultiSimilarityLoss", "MultiSimilarityMiner")
        >>> labels = torch.arange(8) % 2
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8)], labels))
        >>> out["loss"].backward()
    """

    name = "supervised"
    min_batch_size = 2
    needs_labels = True
    num_views = 1
    sync_batchnorm = False

    def __init__(
        self,
        backbone: nn.Module,
        loss: nn.Module | str = SupervisedConfig.loss,
        miner: nn.Module | str | None = SupervisedConfig.miner,
        embedding_head: nn.Module | None = None,
        samples_per_class: int | str | None = SupervisedConfig.samples_per_class,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        _check_samples_per_class("samples_per_class", samples_per_class)
        if isinstance(loss, str):
            loss = make_loss(loss, embedding_size=feature_dim)
        if not isinstance(loss, nn.Module):
            raise TypeError(f"loss must be an nn.Module or a loss name, got {type(loss).__name__}")
        if isinstance(miner, str):
            miner = make_miner(miner)
        if miner is not None and not isinstance(miner, nn.Module):
            raise TypeError(
                f"miner must be an nn.Module, a miner name or None, got {type(miner).__name__}"
            )
        check_module("embedding_head", embedding_head, allow_none=True)
        self.loss_fn = loss
        self.miner = miner
        self.embedding_head = embedding_head
        self.samples_per_class = samples_per_class
        # A batch of m images per class needs at least two classes for negatives.
        if isinstance(samples_per_class, int):
            self.min_batch_size = max(2, 2 * samples_per_class)

    def samples_per_class_in(self, batch_size: int, num_classes: int | None) -> int | None:
        """``samples_per_class`` for a global batch of ``batch_size`` (``"auto"`` resolved by
        :func:`auto_samples_per_class`); a batch it cannot fill with whole classes is refused."""
        m = self.samples_per_class
        if m is None:
            return None
        if num_classes is None:
            raise ValueError(f"{type(self).__name__} needs labels, the data have none")
        if m == "auto":
            return auto_samples_per_class(batch_size, num_classes)
        if batch_size % m:
            raise ValueError(
                f"a global batch of {batch_size} images (batch_size x processes) must be a "
                f"multiple of samples_per_class {m}"
            )
        if m * num_classes < batch_size:
            raise ValueError(
                f"a batch of {batch_size} needs more than samples_per_class x classes = "
                f"{m} x {num_classes} images; raise samples_per_class"
            )
        return m

    def _embed_features(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.embedding_head is None else self.embedding_head(features)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        embeddings = self._embed_features(self.backbone(batch.views[0]))
        labels = batch.labels.to(embeddings.device)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = embeddings.float()
            if is_distributed():
                embeddings = gather_with_grad(embeddings)
                labels = gather_with_grad(labels)
            indices = self.miner(embeddings, labels) if self.miner is not None else None
            loss = self.loss_fn(embeddings, labels, indices)
        out = {"loss": loss}
        if indices is not None:
            # On the loss's device: the Trainer sums the records there. torch.full launches a
            # fill kernel, while torch.tensor(value, device=...) copies from the host and
            # waits for the stream.
            out["mined"] = torch.full((), len(indices[0]), dtype=torch.float32, device=loss.device)
        return out

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._embed_features(super().embed(images))
