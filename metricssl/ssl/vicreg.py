"""VICReg: invariance, variance and covariance terms on two views' projections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.vicreg_loss import VICRegLoss
from .method import Batch, MethodConfig, SSLMethod, param


@dataclass(frozen=True)
class VICRegConfig(MethodConfig):
    """VICReg's hyper-parameters: projection widths and the three loss weights.

    Example:
        >>> from metricssl.ssl.vicreg import VICRegConfig
        >>> VICRegConfig().covariance_v
        1.0
    """

    proj_hidden_dim: int = param(1024, low=1, integer=True)
    proj_output_dim: int = param(1024, low=1, integer=True)
    invariance_lambda: float = param(25.0, low=0)
    variance_mu: float = param(25.0, low=0)
    covariance_v: float = param(1.0, low=0)


class VICReg(SSLMethod):
    """VICReg: backbone + expander, :class:`~metricssl.losses.VICRegLoss`.

    Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022. Under DDP both views are gathered with gradient
    so variance and covariance are those of the global batch.

    Args:
        backbone: images -> features.
        projection_head: features -> projections (the paper's expander).
        invariance_lambda, variance_mu, covariance_v: the terms' weights (25, 25, 1).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.vicreg import VICReg
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = VICReg(backbone, nn.Linear(32, 16))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
    """

    name = "vicreg"
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        invariance_lambda: float = VICRegConfig.invariance_lambda,
        variance_mu: float = VICRegConfig.variance_mu,
        covariance_v: float = VICRegConfig.covariance_v,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        VICRegConfig.check(
            invariance_lambda=invariance_lambda, variance_mu=variance_mu, covariance_v=covariance_v
        )
        self.projection_head = projection_head
        self.criterion = VICRegLoss(
            invariance_lambda=invariance_lambda,
            variance_mu=variance_mu,
            covariance_v=covariance_v,
            gather_distributed=True,
        )

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v = torch.cat([batch.views[0], batch.views[1]])
        z1, z2 = self.projection_head(self.backbone(v)).chunk(2)
        loss = self.criterion(z1, z2)
        return {"loss": loss}
