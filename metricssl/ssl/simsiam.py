"""SimSiam: a siamese network with a predictor and a stop-gradient, no negatives."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.negative_cosine_loss import NegativeCosineSimilarityLoss
from .method import Batch, MethodConfig, SSLMethod, param


@dataclass(frozen=True)
class SimSiamConfig(MethodConfig):
    """SimSiam's hyper-parameters: the projection and prediction widths.

    Example:
        >>> from metricssl.ssl.simsiam import SimSiamConfig
        >>> SimSiamConfig().pred_hidden_dim
        128
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(512, low=1, integer=True)
    pred_hidden_dim: int = param(128, low=1, integer=True)


class SimSiam(SSLMethod):
    """SimSiam: ``0.5 * (D(p1, sg(z2)) + D(p2, sg(z1)))``.

    Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021. Both views
    go through the same backbone and projector (``z``); the predictor maps ``z`` to ``p``;
    ``D`` is the negative cosine similarity with a stop-gradient on its target
    (:class:`~metricssl.losses.NegativeCosineSimilarityLoss`), which is what prevents
    collapse. The paper keeps the predictor's learning rate fixed (no decay); the registry's
    SimSiam defaults do the same through a separate parameter group (see
    :meth:`param_groups`).

    Args:
        backbone: images -> features.
        projection_head: features -> projections ``z``.
        prediction_head: ``z`` -> predictions ``p``.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.simsiam import SimSiam
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = SimSiam(backbone, nn.Linear(32, 16), nn.Linear(16, 16))
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
    """

    name = "simsiam"
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        prediction_head: nn.Module,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        self.projection_head = projection_head
        self.prediction_head = prediction_head
        self.criterion = NegativeCosineSimilarityLoss(stop_gradient=True)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v = torch.cat([batch.views[0], batch.views[1]])
        z = self.projection_head(self.backbone(v))
        p1, p2 = self.prediction_head(z).chunk(2)
        z1, z2 = z.chunk(2)
        loss = 0.5 * (self.criterion(p1, z2) + self.criterion(p2, z1))
        return {"loss": loss}

    def param_groups(self) -> list[dict]:
        predictor = [p for p in self.prediction_head.parameters() if p.requires_grad]
        ids = {id(p) for p in predictor}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": rest}, {"params": predictor, "fixed_lr": True}]
