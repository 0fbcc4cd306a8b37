"""MoCo v3: a momentum encoder, a predictor, and InfoNCE against the global batch's keys."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.infonce import info_nce
from .method import Batch, MethodConfig, MomentumConfigMixin, MomentumTargets, SSLMethod, param


@dataclass(frozen=True)
class MoCoV3Config(MomentumConfigMixin, MethodConfig):
    """MoCo v3's hyper-parameters: head widths, the temperature and the momentum schedule.

    Example:
        >>> from metricssl.ssl.moco_v3 import MoCoV3Config
        >>> MoCoV3Config().temperature, MoCoV3Config().final_momentum
        (0.2, 1.0)
    """

    proj_hidden_dim: int = param(1024, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    pred_hidden_dim: int = param(1024, low=1, integer=True)
    temperature: float = param(0.2, low=0, low_inclusive=False)
    momentum: float = param(0.99, low=0, high=1)
    final_momentum: float = param(1.0, low=0, high=1)


class MoCoV3(MomentumTargets, SSLMethod):
    """MoCo v3: each view's prediction against the other view's momentum keys of the global
    batch.

    Chen, Xie and He, "An Empirical Study of Training Self-Supervised Vision Transformers",
    ICCV 2021. The online network is backbone -> projection head -> prediction head (``q``);
    the momentum encoder, a copy of backbone + projection head (``k``), follows it as an
    exponential moving average whose momentum rises from ``momentum`` to ``final_momentum``
    on a cosine schedule (the paper's 0.99 -> 1). There is no queue: the negatives of a query
    are the keys of the other images in the batch, gathered from every process. The loss is
    the paper's symmetric ``ctr(q1, k2) + ctr(q2, k1)``, where ``ctr`` is InfoNCE
    (:func:`~metricssl.losses.infonce.info_nce`) over the cosine similarities divided by
    ``temperature``, scaled by ``2 * temperature`` as in the paper (which makes the gradient's
    size independent of the temperature). Works with a CNN or a ViT backbone; the paper's
    augmentations are BYOL's (the registry's recipe).

    Args:
        backbone: images -> features.
        projection_head: features -> projections (also copied into the momentum encoder).
        prediction_head: projections -> predictions (same width).
        temperature: InfoNCE temperature; 0.2 (the paper's ViT value; its ResNet recipe uses
            1.0, which on short small-image runs trains more slowly).
        momentum: the momentum encoder's momentum at step 0 (0.99).
        final_momentum: its momentum at the end of training (1.0).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.moco_v3 import MoCoV3
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = MoCoV3(backbone, nn.Linear(32, 16), nn.Linear(16, 16))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> method.on_step_end(1, 100)  # momentum update of the key encoder
    """

    name = "moco_v3"
    momentum_targets = {
        "momentum_backbone": "backbone",
        "momentum_projection_head": "projection_head",
    }
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        prediction_head: nn.Module,
        temperature: float = MoCoV3Config.temperature,
        momentum: float = MoCoV3Config.momentum,
        final_momentum: float = MoCoV3Config.final_momentum,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        MoCoV3Config.check(
            temperature=temperature, momentum=momentum, final_momentum=final_momentum
        )
        self.projection_head = projection_head
        self.prediction_head = prediction_head
        self.init_momentum_targets(momentum, final_momentum)
        self.temperature = float(temperature)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        # One pass per encoder for both views: BatchNorm sees the 2B images together.
        v = torch.cat([batch.views[0], batch.views[1]])
        q1, q2 = self.prediction_head(self.projection_head(self.backbone(v))).chunk(2)
        with torch.no_grad():
            k1, k2 = self.momentum_projection_head(self.momentum_backbone(v)).chunk(2)
        loss = self.contrast(q1, k2) + self.contrast(q2, k1)
        return {"loss": loss}

    def contrast(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The paper's ``ctr(q, k)``: InfoNCE of each query against every process's keys
        (its own image's key the positive), times ``2 * temperature``."""
        loss = info_nce(queries, keys, temperature=self.temperature, gather=True, normalize=True)
        return 2 * self.temperature * loss


__all__ = ["MoCoV3", "MoCoV3Config"]
