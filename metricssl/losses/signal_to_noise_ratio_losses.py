"""SignalToNoiseRatioContrastiveLoss: the contrastive loss on the SNR distance."""

from __future__ import annotations

from ..core.validation import check_distance_type
from ..distances import BaseDistance, SNRDistance
from ..reducers import BaseReducer
from .contrastive_loss import ContrastiveLoss


class SignalToNoiseRatioContrastiveLoss(ContrastiveLoss):
    """Contrastive loss on signal-to-noise ratio distances (PML's class of that name).

    Yuan, Deng, Tang, Tang and Chen, "Signal-To-Noise Ratio: A Robust Distance Metric for Deep
    Metric Learning", CVPR 2019. With ``d`` the SNR distance, two sub-losses::

        pos_loss = relu(d_ap - pos_margin)   for every positive pair
        neg_loss = relu(neg_margin - d_an)   for every negative pair

    each reduced by its own copy of the reducer and summed. As in PML this is a
    :class:`~metricssl.losses.ContrastiveLoss` whose distance must be an SNRDistance, so it
    shares its fast path: without an ``indices_tuple`` and with a Mean/Sum/Threshold/AvgNonZero
    reducer, both sub-losses are reduced straight from the N x M matrix with masks.

    Args:
        pos_margin: margin for the positive pairs.
        neg_margin: margin for the negative pairs.
        distance: must be an SNRDistance (the default).
        reducer: AvgNonZeroReducer by default (one per sub-loss).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses import SignalToNoiseRatioContrastiveLoss
        >>> loss_fn = SignalToNoiseRatioContrastiveLoss(pos_margin=0, neg_margin=1)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        pos_margin: float = 0,
        neg_margin: float = 1,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        super().__init__(
            pos_margin=pos_margin,
            neg_margin=neg_margin,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, SNRDistance)

    def get_default_distance(self) -> BaseDistance:
        return SNRDistance()
