"""CosFaceLoss: an additive cosine margin on the target class, ``scale (cos(theta_y) - m)``."""

from __future__ import annotations

import torch

from ..distances import BaseDistance
from ..reducers import BaseReducer
from .classification_loss import check_finite_number
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss


class CosFaceLoss(LargeMarginSoftmaxLoss):
    """CosFace / Large Margin Cosine Loss (PML's ``CosFaceLoss``).

    Wang, Wang, Zhou, Ji, Gong, Zhou, Li and Liu, "CosFace: Large Margin Cosine Loss for Deep
    Face Recognition", CVPR 2018. Embeddings and class weights are normalised; the logits are
    ``scale * cos(theta_j)``, with ``scale * (cos(theta_y) - margin)`` for the target class.

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings; ``W`` is ``(embedding_size, num_classes)``.
        margin: the cosine margin ``m`` (any finite number; negative margins are allowed).
        scale: multiplies every logit (> 0).
        weight_init_func, weight_regularizer, weight_reg_weight, distance (CosineSimilarity,
            required), reducer, embedding_regularizer, embedding_reg_weight, collect_stats:
            as in :class:`LargeMarginSoftmaxLoss`.

    Example:
        >>> import torch
        >>> from metricssl.losses.cosface_loss import CosFaceLoss
        >>> loss_fn = CosFaceLoss(num_classes=10, embedding_size=32, margin=0.35, scale=64)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randint(0, 10, (16,)))
        >>> logits = loss_fn.get_logits(torch.randn(4, 32))  # scale * cosine, no margin
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.35,
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
        check_finite_number("margin", margin)

    def init_margin(self) -> None:
        pass

    def modify_cosine_of_target_classes(self, cosine_of_target_classes):
        if self.collect_stats:
            with torch.no_grad():
                self.get_angles(cosine_of_target_classes)  # records avg_angle
        return cosine_of_target_classes - self.margin

    def logit_scale(self, embeddings):
        return self.scale, 1
