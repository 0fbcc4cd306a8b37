"""IntraPairVarianceLoss: penalise pairs that stray from their group's mean similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from ..utils.pair_masks import pos_neg_masks
from ..utils.validation import check_number
from .base_metric_loss_function import require_ref_labels
from .generic_pair_loss import GenericPairLoss


class IntraPairVarianceLoss(GenericPairLoss):
    """Intra-pair variance loss (PML's ``IntraPairVarianceLoss``).

    Yu and Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019 (the intra-pair
    variance term). With ``mu_pos`` and ``mu_neg`` the mean similarity of the positive and
    of the negative pairs, each positive pair ``s_p`` costs ``relu((1 - pos_eps) * mu_pos -
    s_p)^2`` and each negative pair ``s_n`` costs ``relu(s_n - (1 + neg_eps) * mu_neg)^2``
    (the roles flip for a distance, where smaller means closer). The means are part of the
    gradient. Two sub-losses, ``pos_loss`` and ``neg_loss``.

    Without an ``indices_tuple`` and with a Mean/Sum/Threshold/AvgNonZero reducer, both are
    reduced straight from the similarity matrix and the label masks; PML first lists every
    pair. Half-precision inputs are computed in float32.

    Args:
        pos_eps: the slack below the mean positive similarity (``pos_eps``).
        neg_eps: the slack above the mean negative similarity (``neg_eps``).
        distance: CosineSimilarity by default.
        reducer: MeanReducer by default, over pairs.
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.intra_pair_variance_loss import IntraPairVarianceLoss
        >>> loss_fn = IntraPairVarianceLoss(pos_eps=0.01, neg_eps=0.01)
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (32,))).backward()
    """

    def __init__(
        self,
        pos_eps: float = 0.01,
        neg_eps: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("pos_eps", pos_eps)
        check_number("neg_eps", neg_eps)
        super().__init__(
            mat_based_loss=False,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.pos_eps = pos_eps
        self.neg_eps = neg_eps
        self.add_to_recordable_attributes(list_of_names=["pos_eps", "neg_eps"], is_stat=False)

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        fused_pos = self.fused_reduction("pos_loss")
        fused_neg = self.fused_reduction("neg_loss")
        if indices_tuple is not None or labels is None or fused_pos is None or fused_neg is None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, None, type(self).__name__)
        if not self._has_pairs(labels, ref_labels):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        mat = mat.to(c_f.accumulation_dtype(mat.dtype))
        pos, neg = pos_neg_masks(labels, ref_labels)
        # Positives are usually few: gather them. Negatives are most of the matrix: mask it.
        pos_sim = mat[pos]
        pos_mean = pos_sim.sum() / max(len(pos_sim), 1)
        pos_losses = F.relu(
            self.variance_with_eps(pos_sim, pos_mean, self.pos_eps, self.distance.is_inverted)
        ).square()
        # clamp: with no pairs the mean is 0 instead of NaN (whose gradient would leak).
        neg_mean = torch.where(neg, mat, 0).sum() / neg.sum().clamp(min=1)
        neg_losses = F.relu(
            self.variance_with_eps(mat, neg_mean, self.neg_eps, not self.distance.is_inverted)
        ).square()
        pos_total, pos_count = fused_pos.partial(pos_losses)
        neg_total, neg_count = fused_neg.partial(neg_losses, neg)
        return {
            "pos_loss": fused_pos.loss_entry(pos_total, pos_count, embeddings),
            "neg_loss": fused_neg.loss_entry(neg_total, neg_count, embeddings),
        }

    def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
        out = {}
        for name, pairs, eps, increase, indices, kind in [
            (
                "pos_loss",
                pos_pairs,
                self.pos_eps,
                self.distance.is_inverted,
                lmu.pos_pairs_from_tuple(indices_tuple),
                "pos_pair",
            ),
            (
                "neg_loss",
                neg_pairs,
                self.neg_eps,
                not self.distance.is_inverted,
                lmu.neg_pairs_from_tuple(indices_tuple),
                "neg_pair",
            ),
        ]:
            loss = 0
            if len(pairs) > 0:
                x = pairs.to(c_f.accumulation_dtype(pairs.dtype))
                var = self.variance_with_eps(x, x.mean(), eps, increase)
                loss = (F.relu(var) ** 2).to(pairs.dtype)
            out[name] = {"losses": loss, "indices": indices, "reduction_type": kind}
        return out

    def variance_with_eps(self, pairs, mean_sim, eps, incentivize_increase):
        """PML's helper: how far each pair falls short of its (slackened) group mean."""
        if incentivize_increase:
            return (1 - eps) * mean_sim - pairs
        return pairs - (1 + eps) * mean_sim
