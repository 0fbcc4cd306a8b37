"""Barlow Twins: the cross-correlation of two views' projections is pushed to the identity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.barlow_twins_loss import BarlowTwinsLoss
from .method import Batch, MethodConfig, SSLMethod, param


@dataclass(frozen=True)
class BarlowTwinsConfig(MethodConfig):
    """Barlow Twins' hyper-parameters: projection widths and the loss weights.

    Example:
        >>> from metricssl.ssl.barlow_twins import BarlowTwinsConfig
        >>> BarlowTwinsConfig().scale_loss
        1.0
    """

    proj_hidden_dim: int = param(1024, low=1, integer=True)
    proj_output_dim: int = param(1024, low=1, integer=True)
    lambda_param: float = param(5e-3, low=0)
    scale_loss: float = param(1.0, low=0, low_inclusive=False)


class BarlowTwins(SSLMethod):
    """Barlow Twins: backbone + projector, :class:`~metricssl.losses.BarlowTwinsLoss`.

    Zbontar, Jing, Misra, LeCun and Deny, "Barlow Twins: Self-Supervised Learning via
    Redundancy Reduction", ICML 2021. The loss normalises each view over the batch and
    compares the D x D cross-correlation with the identity; under DDP both views are
    gathered with gradient so the statistics are those of the global batch.

    Args:
        backbone: images -> features.
        projection_head: features -> projections.
        lambda_param: weight of the redundancy (off-diagonal) term (5e-3 in the paper).
        scale_loss: overall factor on the loss.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.barlow_twins import BarlowTwins
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = BarlowTwins(backbone, nn.Linear(32, 16))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
    """

    name = "barlow_twins"
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        lambda_param: float = BarlowTwinsConfig.lambda_param,
        scale_loss: float = BarlowTwinsConfig.scale_loss,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        BarlowTwinsConfig.check(lambda_param=lambda_param, scale_loss=scale_loss)
        self.projection_head = projection_head
        self.criterion = BarlowTwinsLoss(
            lambda_param=lambda_param, scale_loss=scale_loss, gather_distributed=True
        )

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v = torch.cat([batch.views[0], batch.views[1]])
        z1, z2 = self.projection_head(self.backbone(v)).chunk(2)
        return {"loss": self.criterion(z1, z2)}
