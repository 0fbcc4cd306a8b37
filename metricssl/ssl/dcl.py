"""DCL and DCLW: SimCLR's recipe with the decoupled contrastive loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.dcl_loss import DCLLoss, DCLWLoss
from .method import Batch, MethodConfig, SSLMethod, param


@dataclass(frozen=True)
class DCLConfig(MethodConfig):
    """DCL's hyper-parameters: projection widths, the temperature, and DCLW's weighting.

    ``weighted=True`` is DCLW (the positives weighted with concentration ``sigma``); from the
    command line: ``--method dcl --set hparams.weighted=true``.

    Example:
        >>> from metricssl.ssl.dcl import DCLConfig
        >>> DCLConfig().temperature, DCLConfig().weighted
        (0.1, False)
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    temperature: float = param(0.1, low=0, low_inclusive=False)
    weighted: bool = param(False)
    sigma: float = param(0.5, low=0, low_inclusive=False)


class DCL(SSLMethod):
    """Decoupled contrastive learning: SimCLR with the positive out of the denominator.

    Yeh, Hong, Hsu, Liu, Chen and LeCun, "Decoupled Contrastive Learning", ECCV 2022. Two views
    of each image go through the backbone and the projection head, as in
    :class:`~metricssl.ssl.simclr.SimCLR`; the loss is :class:`~metricssl.losses.DCLLoss`
    (``weighted=True``: :class:`~metricssl.losses.DCLWLoss`) over the global batch under DDP.
    Without the "negative-positive coupling" of NT-Xent the loss works with small batches.

    Args:
        backbone: images -> features.
        projection_head: features -> projections (the space of the loss).
        temperature: ``T`` (0.1, the reference code's).
        weighted: DCLW: weight each positive by ``2 - N softmax(s / sigma)``.
        sigma: DCLW's concentration (0.5 in the paper); unused without ``weighted``.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.dcl import DCL
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = DCL(backbone, nn.Linear(32, 16), weighted=True)
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
    """

    name = "dcl"
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        temperature: float = DCLConfig.temperature,
        weighted: bool = DCLConfig.weighted,
        sigma: float = DCLConfig.sigma,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        DCLConfig.check(temperature=temperature, weighted=weighted, sigma=sigma)
        self.projection_head = projection_head
        self.temperature = float(temperature)
        self.weighted = weighted
        self.sigma = float(sigma)
        if weighted:
            self.criterion = DCLWLoss(temperature, sigma=sigma, gather_distributed=True)
        else:
            self.criterion = DCLLoss(temperature, gather_distributed=True)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        # One forward pass for both views: BatchNorm sees the 2B images together.
        v = torch.cat([batch.views[0], batch.views[1]])
        z1, z2 = self.projection_head(self.backbone(v)).chunk(2)
        return {"loss": self.criterion(z1, z2)}


__all__ = ["DCL", "DCLConfig"]
