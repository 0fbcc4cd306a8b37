"""ContrastiveLoss: pull positive pairs within a margin, push negative pairs beyond one."""

from __future__ import annotations

import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..reducers import AvgNonZeroReducer
from .base_metric_loss_function import require_labels_or_indices_tuple, require_ref_labels
from .generic_pair_loss import GenericPairLoss


class ContrastiveLoss(GenericPairLoss):
    """Contrastive loss: ``relu(d_pos - pos_margin)`` and ``relu(neg_margin - d_neg)``.

    Hadsell, Chopra and LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
    CVPR 2006. With a similarity (``distance.is_inverted``) the roles flip: positives should
    be above ``pos_margin`` and negatives below ``neg_margin``.

    Same arguments, values and gradients as PML's ``ContrastiveLoss``: two sub-losses,
    ``pos_loss`` and ``neg_loss``, each averaged over its non-zero pairs by default. Without
    an ``indices_tuple`` and with Mean/Sum/Threshold/AvgNonZero reducers, both are reduced
    straight from the distance matrix and the label masks; PML first lists every pair.

    Args:
        pos_margin: positive pairs closer than this cost nothing.
        neg_margin: negative pairs farther than this cost nothing.
        distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in
            :class:`~metricssl.losses.BaseMetricLossFunction` (AvgNonZeroReducer by default).

    Example:
        >>> import torch
        >>> from metricssl.losses.contrastive_loss import ContrastiveLoss
        >>> loss_fn = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> labels = torch.randint(0, 4, (32,))
        >>> loss_fn(embeddings, labels).backward()
    """

    def __init__(
        self,
        pos_margin: float = 0,
        neg_margin: float = 1,
        distance=None,
        reducer=None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("pos_margin", pos_margin)
        check_number("neg_margin", neg_margin)
        super().__init__(
            mat_based_loss=False,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)

    def get_default_reducer(self):
        return AvgNonZeroReducer()

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        fused_pos = self.fused_reduction("pos_loss")
        fused_neg = self.fused_reduction("neg_loss")
        if indices_tuple is not None or labels is None or fused_pos is None or fused_neg is None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        # PML gives a zero loss when there is at most one positive and one negative pair.
        if not self._has_pairs(labels, ref_labels):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        mat = mat.to(c_f.accumulation_dtype(mat.dtype))
        pos, neg = pos_neg_masks(labels, ref_labels)
        # Positives are usually a small fraction of the pairs: gather them instead of
        # computing the positive term over the whole matrix.
        pos_total, pos_count = fused_pos.partial(self.pos_calc(mat[pos], self.pos_margin))
        neg_total, neg_count = fused_neg.partial(self.neg_calc(mat, self.neg_margin), neg)
        return {
            "pos_loss": fused_pos.loss_entry(pos_total, pos_count, embeddings),
            "neg_loss": fused_neg.loss_entry(neg_total, neg_count, embeddings),
        }

    def _compute_loss(self, pos_pair_dist, neg_pair_dist, indices_tuple):
        pos_loss = self.pos_calc(pos_pair_dist, self.pos_margin) if len(pos_pair_dist) else 0
        neg_loss = self.neg_calc(neg_pair_dist, self.neg_margin) if len(neg_pair_dist) else 0
        return {
            "pos_loss": {
                "losses": pos_loss,
                "indices": lmu.pos_pairs_from_tuple(indices_tuple),
                "reduction_type": "pos_pair",
            },
            "neg_loss": {
                "losses": neg_loss,
                "indices": lmu.neg_pairs_from_tuple(indices_tuple),
                "reduction_type": "neg_pair",
            },
        }

    def get_per_pair_loss(self, pair_dists, pos_or_neg: str):
        """PML's helper: the per-pair loss of ``"pos"`` or ``"neg"`` pair distances."""
        if pos_or_neg == "pos":
            return self.pos_calc(pair_dists, self.pos_margin)
        return self.neg_calc(pair_dists, self.neg_margin)

    def pos_calc(self, pos_pair_dist, margin):
        return F.relu(self.distance.margin(pos_pair_dist, margin))

    def neg_calc(self, neg_pair_dist, margin):
        return F.relu(self.distance.margin(margin, neg_pair_dist))
