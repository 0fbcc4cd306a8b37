"""BYOL: an online network predicts a slowly moving target network's projection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.negative_cosine_loss import NegativeCosineSimilarityLoss
from .method import Batch, MethodConfig, MomentumConfigMixin, MomentumTargets, SSLMethod, param


@dataclass(frozen=True)
class BYOLConfig(MomentumConfigMixin, MethodConfig):
    """BYOL's hyper-parameters: head widths and the target encoder's momentum schedule.

    Example:
        >>> from metricssl.ssl.byol import BYOLConfig
        >>> BYOLConfig().final_momentum
        1.0
    """

    proj_hidden_dim: int = param(1024, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    pred_hidden_dim: int = param(1024, low=1, integer=True)
    momentum: float = param(0.99, low=0, high=1)
    final_momentum: float = param(1.0, low=0, high=1)


class BYOL(MomentumTargets, SSLMethod):
    """BYOL: online backbone + projector + predictor against a momentum target.

    Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    NeurIPS 2020. The target (a copy of backbone + projector) follows the online network as
    an exponential moving average whose momentum rises from ``momentum`` to
    ``final_momentum`` on a cosine schedule over training. The loss is symmetric:
    ``0.5 * (D(p1, z2') + D(p2, z1'))`` with ``D`` the negative cosine similarity
    (:class:`~metricssl.losses.NegativeCosineSimilarityLoss`; BYOL's ``2 - 2 cos`` has the
    same gradients up to a factor 2), ``p`` the online predictions and ``z'`` the target
    projections (no gradient).

    Args:
        backbone: images -> features.
        projection_head: features -> projections.
        prediction_head: projections -> predictions (same width).
        momentum: the target momentum at step 0 (0.99 in the paper for short runs).
        final_momentum: the momentum at the end of training (1.0).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.byol import BYOL
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = BYOL(backbone, nn.Linear(32, 16), nn.Linear(16, 16))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> method.on_step_end(1, 100)
    """

    name = "byol"
    momentum_targets = {"target_backbone": "backbone", "target_projection_head": "projection_head"}
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        prediction_head: nn.Module,
        momentum: float = BYOLConfig.momentum,
        final_momentum: float = BYOLConfig.final_momentum,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        BYOLConfig.check(momentum=momentum, final_momentum=final_momentum)
        self.projection_head = projection_head
        self.prediction_head = prediction_head
        self.init_momentum_targets(momentum, final_momentum)
        self.criterion = NegativeCosineSimilarityLoss()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v = torch.cat([batch.views[0], batch.views[1]])
        p1, p2 = self.prediction_head(self.projection_head(self.backbone(v))).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projection_head(self.target_backbone(v)).chunk(2)
        loss = 0.5 * (self.criterion(p1, t2) + self.criterion(p2, t1))
        return {"loss": loss}
