"""RankedListLoss: pull positives inside a boundary, push negatives beyond it, weighted."""

from __future__ import annotations

import warnings

import torch

from ..core import common as c_f
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance, LpDistance
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels
from .rank_utils import reject_indices_tuple, reject_ref_emb

# PML adds this to every weight of a row's normaliser (so an empty row divides by N * 1e-5).
_WEIGHT_EPS = 1e-5


class RankedListLoss(BaseMetricLossFunction):
    """Ranked List Loss: each query's positives within ``alpha - margin``, negatives beyond
    ``alpha``, violators weighted by how far they are.

    Wang, Hua, Kodirov, Hu, Garnier and Robertson, "Ranked List Loss for Deep Metric
    Learning", CVPR 2019. For a query with distances ``d``, the violating positives
    (``d > alpha - margin``) and negatives (``d < alpha``) give::

        L_P = sum w_p (d - (alpha - margin)) / sum (w_p + 1e-5),  w_p = exp(Tp (d - (alpha - margin)))
        L_N = sum w_n (alpha - d) / sum (w_n + 1e-5),             w_n = exp(Tn (alpha - d))
        loss = (1 - imbalance) L_P + imbalance L_N

    where each normaliser runs over the whole row (N terms of ``1e-5`` included), as in PML.
    Like PML, only pairs with a distance above 0 are weighted. The defaults (``Tp=0``) are
    the paper's RLL-Simpler. Labels are required; ``ref_emb`` and ``indices_tuple`` are not
    supported (ValueError).

    Compatibility: same arguments (``margin`` and ``Tn`` have no default), values and
    gradients as PML 2.9, with masks instead of boolean-index assignments; half-precision
    inputs are computed in float32 and returned in the input dtype. A temperature above 5
    warns, as in PML.

    Args:
        margin: the width of the band between the positive and negative boundaries.
        Tn: temperature of the negative weights.
        imbalance: weight of the negative term, in [0, 1].
        alpha: the negative boundary; ``1 + margin / 2`` when None.
        Tp: temperature of the positive weights.
        distance: LpDistance by default.
        reducer: MeanReducer by default (over queries).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.ranked_list_loss import RankedListLoss
        >>> loss_fn = RankedListLoss(margin=0.4, Tn=4)
        >>> embeddings = torch.randn(16, 32, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (16,))).backward()
    """

    def __init__(
        self,
        margin: float,
        Tn: float,
        imbalance: float = 0.5,
        alpha: float | None = None,
        Tp: float = 0,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("margin", margin)
        check_number("Tn", Tn)
        check_number("imbalance", imbalance, low=0, high=1)
        check_number("alpha", alpha, allow_none=True)
        check_number("Tp", Tp)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.margin = margin
        self.imbalance = imbalance
        self.alpha = alpha if alpha is not None else 1 + margin / 2
        if Tp > 5 or Tn > 5:
            warnings.warn(
                "RankedListLoss: Tp or Tn above 5; large temperatures may overflow exp()",
                stacklevel=2,
            )
        self.Tp = Tp
        self.Tn = Tn
        self.add_to_recordable_attributes(
            list_of_names=["imbalance", "alpha", "margin", "Tp", "Tn"], is_stat=False
        )

    def get_default_distance(self):
        return LpDistance()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels(labels, name)
        reject_ref_emb(embeddings, labels, ref_emb, ref_labels, name)
        reject_indices_tuple(indices_tuple, name)
        acc = c_f.accumulation_dtype(embeddings.dtype)
        mat = self.distance(embeddings.to(acc))
        pos, neg = pos_neg_masks(labels)
        pos_boundary = self.alpha - self.margin
        # Violators; as in PML, a pair is weighted only when its distance is above 0.
        hard_pos = pos & (mat > pos_boundary) & (mat > 0)
        hard_neg = neg & (mat < self.alpha) & (mat > 0)
        # Non-violators get excess 0, so exp() below stays finite where it is discarded.
        pos_excess = torch.where(hard_pos, mat - pos_boundary, 0)
        neg_excess = torch.where(hard_neg, self.alpha - mat, 0)
        w_p = torch.where(hard_pos, torch.exp(self.Tp * pos_excess), 0)
        w_n = torch.where(hard_neg, torch.exp(self.Tn * neg_excess), 0)
        loss_p = (w_p * pos_excess).sum(dim=1) / (w_p + _WEIGHT_EPS).sum(dim=1)
        loss_n = (w_n * neg_excess).sum(dim=1) / (w_n + _WEIGHT_EPS).sum(dim=1)
        losses = (1 - self.imbalance) * loss_p + self.imbalance * loss_n
        return {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(losses),
                "reduction_type": "element",
            }
        }
