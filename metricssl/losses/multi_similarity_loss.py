"""MultiSimilarityLoss: soft weighting of every positive and negative pair of an anchor."""

from __future__ import annotations

from ..core import common as c_f
from ..core.loss_and_miner_utils import masked_logsumexp
from ..core.validation import check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .generic_pair_loss import GenericPairLoss


class MultiSimilarityLoss(GenericPairLoss):
    """Multi-similarity loss, one value per anchor (PML's ``MultiSimilarityLoss``).

    Wang, Han, Huang, Dong and Scott, "Multi-Similarity Loss with General Pair Weighting for
    Deep Metric Learning", CVPR 2019. For anchor ``i`` with similarities ``s``::

        (1/alpha) log(1 + sum_pos exp(-alpha (s_ip - base)))
        + (1/beta) log(1 + sum_neg exp(beta (s_in - base)))

    (for a distance the signs flip, through ``distance.margin``). The terms are taken over the
    matrix with masks, never over lists of pairs; log-sum-exps are accumulated in float32 for
    half-precision inputs.

    Args:
        alpha: scale of the positive terms (> 0).
        beta: scale of the negative terms (> 0).
        base: the similarity (or distance) both terms are measured from.
        distance: CosineSimilarity by default.
        reducer: MeanReducer by default (over anchors).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses import MultiSimilarityLoss
        >>> loss_fn = MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        alpha: float = 2,
        beta: float = 50,
        base: float = 0.5,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("alpha", alpha, low=0, low_inclusive=False)
        check_number("beta", beta, low=0, low_inclusive=False)
        check_number("base", base)
        super().__init__(
            mat_based_loss=True,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.alpha = alpha
        self.beta = beta
        self.base = base
        self.add_to_recordable_attributes(list_of_names=["alpha", "beta", "base"], is_stat=False)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        x = mat.to(c_f.accumulation_dtype(mat.dtype))
        pos_exp = self.distance.margin(x, self.base)
        neg_exp = self.distance.margin(self.base, x)
        pos_loss = masked_logsumexp(self.alpha * pos_exp, pos_mask.bool(), add_one=True)
        neg_loss = masked_logsumexp(self.beta * neg_exp, neg_mask.bool(), add_one=True)
        losses = pos_loss / self.alpha + neg_loss / self.beta
        return {
            "loss": {
                "losses": losses.to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
