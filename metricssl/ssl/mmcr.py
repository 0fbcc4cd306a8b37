"""MMCR: maximum manifold capacity representations from several views of each image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..augment.compose import MultiView
from ..augment.recipes import simclr_views
from ..core.validation import check_number
from ..losses.mmcr_loss import MMCRLoss
from .method import (
    Batch,
    MethodConfig,
    MomentumConfigMixin,
    MomentumTargets,
    SSLMethod,
    features_by_size,
    param,
)


def mmcr_views(
    image_size,
    *,
    n_views: int = 4,
    blur_p: float = 0.0,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **options,
) -> MultiView:
    """MMCR's views: ``n_views`` identically distributed views of each image.

    The authors' CIFAR recipe (Yerxa et al., NeurIPS 2023, and their code): crop, flip,
    colour jitter (0.4, 0.4, 0.4, 0.1) with p = 0.8, grayscale p = 0.2 and no blur, which is
    :func:`~metricssl.augment.simclr_views` without blur. They take 40 views per image on a
    GPU; the default here is 4 (see :class:`MMCR`). ``options`` are
    :func:`~metricssl.augment.simclr_views`'s.

    Example:
        >>> import torch
        >>> from metricssl.ssl.mmcr import mmcr_views
        >>> len(mmcr_views(28)(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)))
        4
    """
    check_number("n_views", n_views, low=2, integer=True)
    return simclr_views(image_size, n_views=n_views, blur_p=blur_p, mean=mean, std=std, **options)


@dataclass(frozen=True)
class MMCRConfig(MomentumConfigMixin, MethodConfig):
    """MMCR's hyper-parameters: head widths, the loss's ``lmda`` and the optional momentum
    encoder (``momentum=None``: none, the authors' CIFAR setup).

    Example:
        >>> from metricssl.ssl.mmcr import MMCRConfig
        >>> MMCRConfig().lmda, MMCRConfig().momentum
        (0.0, None)
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    lmda: float = param(0.0, low=0)
    momentum: float | None = param(None, low=0, high=1, allow_none=True)
    final_momentum: float = param(1.0, low=0, high=1)


class MMCR(MomentumTargets, SSLMethod):
    """MMCR: backbone + projector on ``k`` views per image, :class:`~metricssl.losses.MMCRLoss`.

    Yerxa, Kuang, Simoncelli and Chung, "Learning Efficient Coding of Natural Images with
    Maximum Manifold Capacity Representations", NeurIPS 2023. Every view of the batch goes
    through the backbone and projector; the loss is minus the nuclear norm of the matrix of
    each image's mean unit-length projection (plus ``lmda`` times the mean per-image nuclear
    norm). With ``momentum`` set, a momentum copy of backbone and projector (the authors'
    ImageNet setup, lightly's example) also projects every view, without gradient, and its
    projections join the online ones in each image's centroid; its momentum rises to
    ``final_momentum`` on a cosine schedule. Under DDP the images of every rank are gathered
    with gradient, so the centroid matrix is the global batch's.

    Views: as many as the recipe makes (:func:`mmcr_views`, at least 2). The authors use 40
    on CIFAR with a GPU and report that more views help; the registry's default is 4 because
    every view is one more forward and backward pass through the backbone, and on a CPU 4
    views already cost twice a two-view method's step. Raise it with
    :func:`~metricssl.ssl.registry.build_method`'s ``view_kwargs={"n_views": 8}``.

    Args:
        backbone: images -> features.
        projection_head: features -> projections.
        lmda: weight of the per-image nuclear norms (0, the authors' default).
        momentum: None (no momentum encoder), or the target momentum at step 0.
        final_momentum: the target momentum at the end of training (1.0).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.mmcr import MMCR
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = MMCR(backbone, nn.Linear(32, 16))
        >>> views = [torch.rand(8, 1, 8, 8) for _ in range(4)]
        >>> out = method.training_step(Batch(views))
        >>> out["loss"].backward()
    """

    name = "mmcr"
    momentum_targets = {"target_backbone": "backbone", "target_projection_head": "projection_head"}
    min_batch_size = 2
    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        lmda: float = MMCRConfig.lmda,
        momentum: float | None = MMCRConfig.momentum,
        final_momentum: float = MMCRConfig.final_momentum,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        MMCRConfig.check(lmda=lmda, momentum=momentum, final_momentum=final_momentum)
        self.projection_head = projection_head
        if momentum is None:
            self.base_momentum, self.final_momentum = None, float(final_momentum)
            self.target_backbone = self.target_projection_head = None
            # No momentum to log: the Trainer logs a method's current_momentum when it has one.
            self.current_momentum = None
        else:
            self.init_momentum_targets(momentum, final_momentum)
        self.criterion = MMCRLoss(lmda=lmda, gather_distributed=True)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        online = self._per_image(self.backbone, self.projection_head, batch.views)
        momentum = None
        if self.target_backbone is not None:
            with torch.no_grad():
                momentum = self._per_image(
                    self.target_backbone, self.target_projection_head, batch.views
                )
        return {"loss": self.criterion(online, momentum)}

    @staticmethod
    def _per_image(backbone, head, views) -> torch.Tensor:
        """(B, k, D): every view's projection, grouped by image."""
        z = head(features_by_size(backbone, views))
        return z.reshape(len(views), views[0].shape[0], -1).transpose(0, 1)

    def on_step_end(self, step: int, total_steps: int) -> None:
        if self.target_backbone is not None:
            super().on_step_end(step, total_steps)
