"""ArcFaceLoss: an additive angular margin on the target class, ``scale cos(theta_y + m)``."""

from __future__ import annotations

import math

import torch

from ..distances import BaseDistance
from ..reducers import BaseReducer
from .classification_loss import check_finite_number
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss


class ArcFaceLoss(LargeMarginSoftmaxLoss):
    """ArcFace / Additive Angular Margin loss (PML's ``ArcFaceLoss``).

    Deng, Guo, Xue and Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face
    Recognition", CVPR 2019. Embeddings and class weights are normalised; the logits are
    ``scale * cos(theta_j)``, with ``scale * cos(theta_y + margin)`` for the target class.
    Where ``theta_y + margin`` would pass pi, the target logit is
    ``scale * (cos(theta_y) - margin * sin(margin))`` instead, which keeps it decreasing in
    ``theta_y`` (as in PML and the reference implementation).

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings; ``W`` is ``(embedding_size, num_classes)``.
        margin: the angular margin in degrees, in (-180, 180); stored in radians as
            ``self.margin``, as PML does.
        scale: multiplies every logit (> 0).
        weight_init_func, weight_regularizer, weight_reg_weight, distance (CosineSimilarity,
            required), reducer, embedding_regularizer, embedding_reg_weight, collect_stats:
            as in :class:`LargeMarginSoftmaxLoss`.

    Unlike PML, target cosines are clamped one float step inside [-1, 1] before ``acos``, so
    an embedding exactly on its class direction gives a finite gradient instead of NaN.

    Example:
        >>> import torch
        >>> from metricssl.losses.arcface_loss import ArcFaceLoss
        >>> loss_fn = ArcFaceLoss(num_classes=10, embedding_size=32, margin=28.6, scale=64)
        >>> loss_optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.01)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randint(0, 10, (16,)))
        >>> loss.backward(); loss_optimizer.step()
        >>> predicted = loss_fn.get_logits(torch.randn(4, 32)).argmax(dim=1)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        *,
        weight_init_func=None,
        weight_regularizer=None,
        weight_reg_weight: float = 1,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        super().__init__(
            num_classes=num_classes,
            embedding_size=embedding_size,
            margin=margin,
            scale=scale,
            weight_init_func=weight_init_func,
            weight_regularizer=weight_regularizer,
            weight_reg_weight=weight_reg_weight,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )

    @staticmethod
    def check_margin(margin) -> None:
        check_finite_number(
            "margin", margin, low=-180, high=180, low_inclusive=False, high_inclusive=False
        )

    def init_margin(self) -> None:
        self.margin = math.radians(self.margin)

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        angles = self.get_angles(cosine_of_target_classes)
        return torch.where(
            angles <= math.pi - self.margin,
            torch.cos(angles + self.margin),
            torch.cos(angles) - self.margin * math.sin(self.margin),
        )

    def logit_scale(self, embeddings):
        return self.scale, 1
