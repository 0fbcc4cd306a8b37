"""ThresholdConsistentMarginLoss: hinge the positive and negative cosine similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_distance_type, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import (
    BaseMetricLossFunction,
    require_labels_or_indices_tuple,
    require_ref_labels,
)


class ThresholdConsistentMarginLoss(BaseMetricLossFunction):
    """Threshold-consistent margin loss (PML's ``ThresholdConsistentMarginLoss``).

    Zhang, Xu, Tang, Fang, Wu, Tighe and Xing, "Threshold-Consistent Margin Loss for
    Open-World Deep Metric Learning", ICLR 2024. With cosine similarities ``s``::

        loss = lambda_plus  * mean_{positive pairs with s <= margin_plus}  (margin_plus - s)
             + lambda_minus * mean_{negative pairs with s >= margin_minus} (s - margin_minus)

    (an empty mean is 0). The loss is already reduced; it is meant as a regulariser added to
    a main loss. Pairs come from labels or from a miner's ``indices_tuple``.

    From labels the sums are taken over the masked N x M similarity matrix; PML first lists
    every pair. Deviation from PML: with ``ref_emb``, PML reads the second member of each
    pair from ``embeddings`` (a bug: the index is a reference index); here it comes from
    ``ref_emb``. As in PML the cosine is computed directly (the distance's settings other
    than its type are not used).

    Args:
        lambda_plus: weight of the positive term (>= 0).
        lambda_minus: weight of the negative term (>= 0).
        margin_plus: positive pairs below this similarity are penalised.
        margin_minus: negative pairs above this similarity are penalised.
        distance: must be a CosineSimilarity (the default).
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.tcm_loss import ThresholdConsistentMarginLoss
        >>> loss_fn = ThresholdConsistentMarginLoss()
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (32,))).backward()
    """

    def __init__(
        self,
        lambda_plus: float = 1.0,
        lambda_minus: float = 1.0,
        margin_plus: float = 0.9,
        margin_minus: float = 0.5,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("lambda_plus", lambda_plus, low=0)
        check_number("lambda_minus", lambda_minus, low=0)
        check_number("margin_plus", margin_plus)
        check_number("margin_minus", margin_minus)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, CosineSimilarity)
        self.lambda_plus = lambda_plus
        self.lambda_minus = lambda_minus
        self.margin_plus = margin_plus
        self.margin_minus = margin_minus

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        acc = c_f.accumulation_dtype(embeddings.dtype)
        query = F.normalize(embeddings.to(acc), dim=1)
        ref = query if ref_emb is embeddings else F.normalize(ref_emb.to(acc), dim=1)
        if indices_tuple is None:
            sim = query @ ref.T
            pos, neg = pos_neg_masks(labels, ref_labels)
            pos_sim, neg_sim = sim, sim
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
            pos_sim = (query[a1] * ref[p]).sum(dim=1)
            neg_sim = (query[a2] * ref[n]).sum(dim=1)
            pos, neg = None, None
        pos_term = _hinge_mean(self.margin_plus - pos_sim, pos)
        neg_term = _hinge_mean(neg_sim - self.margin_minus, neg)
        loss = self.lambda_plus * pos_term + self.lambda_minus * neg_term
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }


def _hinge_mean(gap: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``gap`` over the (masked) entries where it is >= 0; 0 when there are none."""
    active = gap >= 0
    if mask is not None:
        active &= mask
    count = active.sum()
    total = torch.where(active, gap, 0).sum()
    return torch.where(count > 0, total / count.clamp(min=1), 0)
