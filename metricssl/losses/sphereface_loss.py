"""SphereFaceLoss: L-Softmax with normalised class weights (logits ``scale |x| psi(theta)``)."""

from __future__ import annotations

import torch

from ..distances import BaseDistance
from ..reducers import BaseReducer
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss


class SphereFaceLoss(LargeMarginSoftmaxLoss):
    """SphereFace / A-Softmax loss (PML's ``SphereFaceLoss``).

    Liu, Wen, Yu, Li, Raj and Song, "SphereFace: Deep Hypersphere Embedding for Face
    Recognition", CVPR 2017. As :class:`LargeMarginSoftmaxLoss` (the target class's angle is
    multiplied by the integer ``margin``), but the class weights are normalised: the logits
    are ``scale * |x| * cos(theta_j)``, with ``psi(theta_y)`` for the target class.

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        embedding_size: width of the embeddings; ``W`` is ``(embedding_size, num_classes)``.
        margin: the integer angular multiplier ``m`` (>= 1).
        scale: multiplies every logit (> 0).
        weight_init_func, weight_regularizer, weight_reg_weight, distance (CosineSimilarity,
            required), reducer, embedding_regularizer, embedding_reg_weight, collect_stats:
            as in :class:`LargeMarginSoftmaxLoss`.

    Example:
        >>> import torch
        >>> from metricssl.losses.sphereface_loss import SphereFaceLoss
        >>> loss_fn = SphereFaceLoss(num_classes=10, embedding_size=32, margin=4)
        >>> loss = loss_fn(torch.randn(16, 32), torch.randint(0, 10, (16,)))
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 4,
        scale: float = 1,
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

    def logit_scale(self, embeddings):
        # scale |x_i|; the class weights count as normalised
        return torch.linalg.vector_norm(embeddings, dim=1) * self.scale, 1
