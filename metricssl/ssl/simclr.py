"""SimCLR: two views of each image, NT-Xent over the global batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.infonce import two_view_info_nce
from .method import Batch, MethodConfig, SSLMethod, param


def gathered_ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of two aligned views, with every rank's rows as negatives.

    Row ``i`` of ``z1`` and of ``z2`` are two views of one image. Each of this rank's 2B rows is
    an anchor; its positive is the other view of the same image and its negatives are all
    other rows of the global batch (all ranks, both views), on cosine similarities. The loss
    is the mean over local anchors. In one process this is exactly
    :class:`~metricssl.losses.NTXentLoss` on ``cat(z1, z2)`` with labels
    ``cat(arange(B), arange(B))``; across ranks the mean of the ranks' losses is the global
    loss, and DDP's averaged gradients equal the single-process gradients on the whole batch.

    One call of :func:`~metricssl.losses.infonce.two_view_info_nce` (float32 outside autocast;
    every rank must hold the same number of rows); :class:`~metricssl.losses.DCLLoss` is the
    same call with ``decoupled=True``.
    """
    return two_view_info_nce(z1, z2, temperature=temperature, gather=True)


@dataclass(frozen=True)
class SimCLRConfig(MethodConfig):
    """SimCLR's hyper-parameters: projection widths and the InfoNCE temperature.

    Example:
        >>> from metricssl.ssl.simclr import SimCLRConfig
        >>> SimCLRConfig().temperature
        0.2
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    temperature: float = param(0.2, low=0, low_inclusive=False)


class SimCLR(SSLMethod):
    """SimCLR: a backbone and a projection head trained with NT-Xent on two views.

    Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of
    Visual Representations", ICML 2020. Both views go through backbone and head; the loss is
    :func:`gathered_ntxent` (InfoNCE over the global batch under DDP).

    Args:
        backbone: images -> features.
        projection_head: features -> projections (the space of the loss).
        temperature: NT-Xent temperature.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.simclr import SimCLR
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = SimCLR(backbone, nn.Linear(32, 16), temperature=0.2)
        >>> v1, v2 = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
        >>> out = method.training_step(Batch([v1, v2]))
        >>> out["loss"].backward()
    """

    name = "simclr"
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        temperature: float = SimCLRConfig.temperature,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        SimCLRConfig.check(temperature=temperature)
        self.projection_head = projection_head
        self.temperature = float(temperature)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v1, v2 = batch.views[0], batch.views[1]
        # One forward pass for both views: BatchNorm sees the 2B images together.
        z = self.projection_head(self.backbone(torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        loss = gathered_ntxent(z1, z2, self.temperature)
        return {"loss": loss}


__all__ = ["SimCLR", "gathered_ntxent"]
