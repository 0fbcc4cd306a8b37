"""LiftedStructureLoss: each positive pair against the negatives of both of its members."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.validation import check_number
from ..distances import BaseDistance
from ..reducers import BaseReducer
from .anchor_negatives import NegativeRowsPairLoss, anchor_logsumexp

# PML defines GeneralizedLiftedStructureLoss in this module; its import path works here too.
from .generalized_lifted_structure_loss import GeneralizedLiftedStructureLoss  # noqa: F401

# Stands in for log(0) where a side has no negatives: finite, so gradients stay finite.
_LOG_ZERO = -1e30


class LiftedStructureLoss(NegativeRowsPairLoss):
    """The lifted structure loss, one value per positive pair (PML's ``LiftedStructureLoss``).

    Oh Song, Xiang, Jegelka and Savarese, "Deep Metric Learning via Lifted Structured Feature
    Embedding", CVPR 2016. For a positive pair (i, j) with distances ``d``::

        relu(log(sum_{(i,k) neg} exp(neg_margin - d_ik) + sum_{(j,k) neg} exp(neg_margin - d_jk))
             + d_ij - pos_margin) ** 2 / 2

    (the signs flip for a similarity, through ``distance.margin``). As in PML, the negatives
    of ``j`` are those of query row ``j`` — with a separate ``ref_emb`` that is still the
    query row of that index, when there is one — and with a miner's ``indices_tuple`` only
    (and every copy of) the listed negative pairs count.

    PML builds a (positive pairs x negative pairs) matrix; here each query row's negative
    log-sum-exp is computed once and combined per pair, so time and memory are O(N * M).

    Args:
        neg_margin: margin for the negative pairs.
        pos_margin: margin for the positive pairs.
        distance: LpDistance(p=2) by default.
        reducer: MeanReducer by default (over positive pairs).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses import LiftedStructureLoss
        >>> loss_fn = LiftedStructureLoss(neg_margin=1, pos_margin=0)
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
            mat_based_loss=False,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.neg_margin = neg_margin
        self.pos_margin = pos_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def _pair_losses(self, mat, neg_weight, rows, cols, pos_values):
        acc = c_f.accumulation_dtype(mat.dtype)
        remaining_neg = self.distance.margin(self.neg_margin, mat.to(acc))
        lse, has = anchor_logsumexp(remaining_neg, neg_weight)
        lse, has = lse.squeeze(1), has.squeeze(1)
        # The positive's negatives are those of query row `cols` (PML compares the positive's
        # index with the negative pairs' anchors), counted once when it is the anchor itself.
        n_query = mat.shape[0]
        cols_q = cols.clamp(max=n_query - 1)
        use_a = has[rows]
        use_p = (cols < n_query) & (cols != rows) & has[cols_q]
        both = torch.logaddexp(
            torch.where(use_a, lse[rows], _LOG_ZERO), torch.where(use_p, lse[cols_q], _LOG_ZERO)
        )
        neg_term = torch.where(use_a | use_p, both, torch.zeros_like(both))
        remaining_pos = self.distance.margin(pos_values.to(acc), self.pos_margin)
        return torch.relu(neg_term + remaining_pos) ** 2 / 2
