"""PairMarginMiner: positive pairs too far apart and negative pairs too close."""

from __future__ import annotations

import torch

from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance
from .base_miner import BaseMiner


class PairMarginMiner(BaseMiner):
    """Pairs that violate the margins of the contrastive loss.

    The margins of the contrastive loss of Hadsell, Chopra and LeCun, "Dimensionality
    Reduction by Learning an Invariant Mapping", CVPR 2006. Keeps positive pairs with
    ``d(a, p) > pos_margin`` and negative pairs with ``d(a, n) < neg_margin``; for
    similarities (``distance.is_inverted``) ``s(a, p) < pos_margin`` and
    ``s(a, n) > neg_margin``. Same pairs as PML's ``PairMarginMiner``.

    Args:
        pos_margin: positive pairs beyond this are mined.
        neg_margin: negative pairs within this are mined.
        distance: LpDistance by default.
        collect_stats: record the mean positive and negative pair distances on each call.

    Example:
        >>> import torch
        >>> from metricssl.miners.pair_margin_miner import PairMarginMiner
        >>> miner = PairMarginMiner(pos_margin=0.2, neg_margin=0.8)
        >>> a1, p, a2, n = miner(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        pos_margin: float = 0.2,
        neg_margin: float = 0.8,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        check_number("pos_margin", pos_margin)
        check_number("neg_margin", neg_margin)
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.pos_margin = pos_margin
        self.neg_margin = neg_margin
        self.add_to_recordable_attributes(list_of_names=["pos_margin", "neg_margin"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["pos_pair_dist", "neg_pair_dist"], is_stat=True
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos, neg = pos_neg_masks(labels, ref_labels)
        if self.collect_stats:
            self.set_stats(mat, pos, neg)
        if self.distance.is_inverted:
            pos &= mat < self.pos_margin
            neg &= mat > self.neg_margin
        else:
            pos &= mat > self.pos_margin
            neg &= mat < self.neg_margin
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        return a1, p, a2, n

    def set_stats(self, mat, pos, neg):
        pos_pairs, neg_pairs = mat[pos], mat[neg]
        self.pos_pair_dist = torch.mean(pos_pairs).item() if len(pos_pairs) else 0
        self.neg_pair_dist = torch.mean(neg_pairs).item() if len(neg_pairs) else 0
