"""CircleLoss: pair similarities re-weighted by how far each is from its optimum."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.loss_and_miner_utils import masked_logsumexp
from ..core.validation import check_distance_type, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import AvgNonZeroReducer, BaseReducer
from .generic_pair_loss import GenericPairLoss


class CircleLoss(GenericPairLoss):
    """Circle loss for pair labels, one value per anchor (PML's ``CircleLoss``).

    Sun, Cheng, Zhang, Zhang, Zheng, Wang and Wei, "Circle Loss: A Unified Perspective of Pair
    Similarity Optimization", CVPR 2020. For anchor ``i``::

        softplus(logsumexp_pos(-gamma a_p (s_ip - (1 - m)))
                 + logsumexp_neg(gamma a_n (s_in - m)))

    with the (non-differentiated) weights ``a_p = relu(1 + m - s_ip)`` and
    ``a_n = relu(s_in + m)``. Anchors without a positive or without a negative give 0.
    Log-sum-exps are accumulated in float32 for half-precision inputs.

    The paper suggests ``m=0.25, gamma=256`` for face recognition, ``m=0.25, gamma=128`` for
    person re-identification and ``m=0.4, gamma=80`` (the default) for fine-grained retrieval.

    Args:
        m: the relaxation margin.
        gamma: the scale (> 0).
        distance: must be a CosineSimilarity (the default).
        reducer: AvgNonZeroReducer by default.
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses import CircleLoss
        >>> loss_fn = CircleLoss(m=0.4, gamma=80)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        m: float = 0.4,
        gamma: float = 80,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("m", m)
        check_number("gamma", gamma, low=0, low_inclusive=False)
        super().__init__(
            mat_based_loss=True,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, CosineSimilarity)
        self.m = m
        self.gamma = gamma
        self.op = 1 + m
        self.on = -m
        self.delta_p = 1 - m
        self.delta_n = m
        self.add_to_recordable_attributes(
            list_of_names=["m", "gamma", "op", "on", "delta_p", "delta_n"], is_stat=False
        )

    def _compute_loss(self, mat, pos_mask, neg_mask):
        pos, neg = pos_mask.bool(), neg_mask.bool()
        s = mat.to(c_f.accumulation_dtype(mat.dtype))
        # The weights a_p, a_n are constants for the gradient, as in the paper.
        s_const = s.detach()
        pos_logits = -self.gamma * torch.relu(self.op - s_const) * (s - self.delta_p)
        neg_logits = self.gamma * torch.relu(s_const - self.on) * (s - self.delta_n)
        lse_pos = masked_logsumexp(pos_logits, pos)
        lse_neg = masked_logsumexp(neg_logits, neg)
        losses = torch.nn.functional.softplus(lse_pos + lse_neg)
        has_both = pos.any(dim=1, keepdim=True) & neg.any(dim=1, keepdim=True)
        losses = torch.where(has_both, losses, torch.zeros_like(losses))
        return {
            "loss": {
                "losses": losses.to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
