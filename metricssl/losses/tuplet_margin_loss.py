"""TupletMarginLoss: each positive pair, with an angular margin, against its anchor's negatives."""

from __future__ import annotations

import math

import torch

from ..core import common as c_f
from ..core.validation import check_distance_type, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .anchor_negatives import NegativeRowsPairLoss, anchor_logsumexp


class TupletMarginLoss(NegativeRowsPairLoss):
    """Tuplet margin loss, one value per positive pair (PML's ``TupletMarginLoss``).

    Yu and Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019. For a positive pair
    (a, p) with cosine similarity ``s_ap = cos(theta_ap)``::

        log(1 + sum_{(a,n) neg} exp(scale * (s_an - cos(theta_ap - margin))))

    The sum factorises: it is ``softplus(L_a - scale * cos(theta_ap - margin))`` with
    ``L_a = logsumexp_n(scale * s_an)`` computed once per anchor, so time and memory are
    O(N * M) instead of PML's (positive pairs x negative pairs). With a miner's
    ``indices_tuple`` only (and every copy of) the listed negative pairs count. Log-sum-exps
    are accumulated in float32 for half-precision inputs.

    Unlike PML, positive similarities are clamped one float step inside [-1, 1] before
    ``acos``: identical positives, or a rounded cosine of 1.0000001, give a finite loss and
    gradient instead of NaN (elsewhere the values are PML's).

    Args:
        margin: the angular margin, in degrees (stored in radians as ``self.margin``).
        scale: the scale of the logits (> 0).
        distance: must be a CosineSimilarity (the default).
        reducer: MeanReducer by default (over positive pairs).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.
            With ``collect_stats``, ``avg_pos_angle`` and ``avg_neg_angle`` (degrees) are
            recorded on each call.

    Example:
        >>> import torch
        >>> from metricssl.losses import TupletMarginLoss
        >>> loss_fn = TupletMarginLoss(margin=5.73, scale=64)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        margin: float = 5.73,
        scale: float = 64,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("margin", margin)
        check_number("scale", scale, low=0, low_inclusive=False)
        super().__init__(
            mat_based_loss=False,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, CosineSimilarity)
        self.margin = math.radians(margin)
        self.scale = scale
        self.add_to_recordable_attributes(list_of_names=["margin", "scale"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["avg_pos_angle", "avg_neg_angle"], is_stat=True
        )

    def _pair_losses(self, mat, neg_weight, rows, cols, pos_values):
        acc = c_f.accumulation_dtype(mat.dtype)
        lse, has = anchor_logsumexp(self.scale * mat.to(acc), neg_weight)
        lse, has = lse.squeeze(1)[rows], has.squeeze(1)[rows]
        # acos is NaN past +-1 (where a rounded cosine can land) and has an infinite slope at
        # +-1; one float step inside keeps the loss and its gradient finite.
        eps = torch.finfo(acc).eps
        angles = torch.acos(pos_values.to(acc).clamp(-1 + eps, 1 - eps))
        logits = lse - self.scale * torch.cos(angles - self.margin)
        # log(1 + exp(logits)); an anchor without negatives gives 0, as in PML.
        losses = torch.logaddexp(logits, torch.zeros_like(logits))
        return torch.where(has, losses, torch.zeros_like(losses))

    def _set_stats(self, mat, pos_pairs, neg_pairs):
        if not self.collect_stats:  # the host reads below happen only then, as in PML
            return
        with torch.no_grad():
            pos_angle = torch.mean(torch.acos(mat[pos_pairs].float())).item()
            neg_angle = torch.mean(torch.acos(mat[neg_pairs].float())).item()
            self.avg_pos_angle = math.degrees(pos_angle)
            self.avg_neg_angle = math.degrees(neg_angle)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
