"""GeneralizedLiftedStructureLoss: a soft hardest-positive / hardest-negative margin per anchor."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.loss_and_miner_utils import masked_logsumexp
from ..core.validation import check_number
from ..distances import BaseDistance
from ..reducers import BaseReducer
from .generic_pair_loss import GenericPairLoss


class GeneralizedLiftedStructureLoss(GenericPairLoss):
    """The generalized lifted structure loss, one value per anchor (PML's class of that name).

    Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person Re-Identification",
    arXiv:1703.07737, 2017 (the generalization of the lifted structure loss on page 4). For
    anchor ``i`` with distances ``d``::

        relu(logsumexp_pos(d_ip - pos_margin) + logsumexp_neg(neg_margin - d_in))

    (the signs flip for a similarity, through ``distance.margin``). A side with no pair
    contributes 0. Log-sum-exps are accumulated in float32 for half-precision inputs.

    Args:
        neg_margin: margin for the negative pairs.
        pos_margin: margin for the positive pairs.
        distance: LpDistance(p=2) by default.
        reducer: MeanReducer by default (over anchors).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses import GeneralizedLiftedStructureLoss
        >>> loss_fn = GeneralizedLiftedStructureLoss(neg_margin=1, pos_margin=0)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        neg_margin: float = 1,
        pos_margin: float = 0,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("neg_margin", neg_margin)
        check_number("pos_margin", pos_margin)
        super().__init__(
            mat_based_loss=True,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        x = mat.to(c_f.accumulation_dtype(mat.dtype))
        remaining_pos = self.distance.margin(x, self.pos_margin)
        remaining_neg = self.distance.margin(self.neg_margin, x)
        pos_loss = masked_logsumexp(remaining_pos, pos_mask.bool())
        neg_loss = masked_logsumexp(remaining_neg, neg_mask.bool())
        return {
            "loss": {
                "losses": torch.relu(pos_loss + neg_loss).to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }
