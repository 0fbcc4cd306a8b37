"""Barlow Twins: the cross-correlation of two views' projections is pushed to the identity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..core.validation import check_number
from ..losses.barlow_twins_loss import BarlowTwinsLoss
from .method import Batch, SSLMethod


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
        lambda_param: float = 5e-3,
        scale_loss: float = 1.0,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_number("lambda_param", lambda_param, low=0)
        check_number("scale_loss", scale_loss, low=0, low_inclusive=False)
        self.projection_head = projection_head
        self.criterion = BarlowTwinsLoss(
            lambda_param=lambda_param, scale_loss=scale_loss, gather_distributed=True
        )

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v = torch.cat([batch.views[0], batch.views[1]])
        z1, z2 = self.projection_head(self.backbone(v)).chunk(2)
        return {"loss": self.criterion(z1, z2)}
