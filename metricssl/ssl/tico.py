"""TiCo: transformation invariance and covariance contrast against a momentum target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.tico_loss import TiCoLoss
from .method import Batch, MethodConfig, MomentumConfigMixin, MomentumTargets, SSLMethod, param


@dataclass(frozen=True)
class TiCoConfig(MomentumConfigMixin, MethodConfig):
    """TiCo's hyper-parameters: head widths, the loss's ``beta`` and ``rho`` and the target
    encoder's momentum schedule.

    Example:
        >>> from metricssl.ssl.tico import TiCoConfig
        >>> TiCoConfig().beta, TiCoConfig().rho
        (0.9, 8.0)
    """

    proj_hidden_dim: int = param(1024, low=1, integer=True)
    proj_output_dim: int = param(256, low=1, integer=True)
    beta: float = param(0.9, low=0, high=1)
    rho: float = param(8.0, low=0)
    momentum: float = param(0.99, low=0, high=1)
    final_momentum: float = param(1.0, low=0, high=1)


class TiCo(MomentumTargets, SSLMethod):
    """TiCo: an online backbone + projector against a momentum target, :class:`~metricssl.
    losses.TiCoLoss`.

    Zhu, Moraes, Karakulak, Sobol, Canziani and LeCun, "TiCo: Transformation Invariance and
    Covariance Contrast for Self-Supervised Visual Representation Learning", 2022
    (arXiv:2206.10698). As in the paper (which builds on BYOL's architecture without the
    predictor) and lightly's implementation, the online network's projection ``z_a`` of view
    1 is pulled towards the momentum target's projection ``z_b`` of view 2, and pushed away
    from the directions of a running covariance matrix of the online projections (the loss's
    ``C``, a buffer, so checkpoints resume it); the target follows the online network as an
    exponential moving average whose momentum rises from ``momentum`` to ``final_momentum``
    on a cosine schedule. Under DDP both projections are gathered with gradient, so ``C`` and
    the loss are the global batch's.

    Args:
        backbone: images -> features.
        projection_head: features -> projections (the paper: 4096 -> BN -> ReLU -> 256).
        beta: momentum of the covariance matrix (0.9).
        rho: weight of the covariance contrast (8.0).
        momentum: the target momentum at step 0 (0.99).
        final_momentum: the momentum at the end of training (1.0).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.tico import TiCo
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = TiCo(backbone, nn.Linear(32, 16))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> method.on_step_end(1, 100)
        >>> method.criterion.C.shape
        torch.Size([16, 16])
    """

    name = "tico"
    momentum_targets = {"target_backbone": "backbone", "target_projection_head": "projection_head"}
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        beta: float = TiCoConfig.beta,
        rho: float = TiCoConfig.rho,
        momentum: float = TiCoConfig.momentum,
        final_momentum: float = TiCoConfig.final_momentum,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        TiCoConfig.check(beta=beta, rho=rho, momentum=momentum, final_momentum=final_momentum)
        self.projection_head = projection_head
        self.init_momentum_targets(momentum, final_momentum)
        self.criterion = TiCoLoss(beta=beta, rho=rho, gather_distributed=True)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        z_a = self.projection_head(self.backbone(batch.views[0]))
        with torch.no_grad():
            z_b = self.target_projection_head(self.target_backbone(batch.views[1]))
        return {"loss": self.criterion(z_a, z_b)}
