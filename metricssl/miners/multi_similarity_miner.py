"""MultiSimilarityMiner: pairs that are hard relative to the anchor's hardest opposite pair."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance, CosineSimilarity
from .anchor_blocks import empty_indices
from .base_miner import BaseMiner


class MultiSimilarityMiner(BaseMiner):
    """The pair mining step of the multi-similarity loss.

    Wang, Han, Huang, Dong and Scott, "Multi-Similarity Loss with General Pair Weighting for
    Deep Metric Learning", CVPR 2019. With similarities ``s`` (the default
    CosineSimilarity), a positive pair is kept when ``s(a, p) - epsilon`` is below the
    anchor's largest negative similarity, and a negative pair when ``s(a, n) + epsilon`` is
    above the anchor's smallest positive similarity. With a distance the inequalities flip.
    Same pairs as PML's ``MultiSimilarityMiner``, found with two row reductions and masks
    instead of sorting every row.

    As in PML, a pair that is not a negative counts as a positive candidate and vice versa,
    and the diagonal is left out when ``ref_emb`` is the query tensor itself. If the batch
    has no positive pair or no negative pair, nothing is mined.

    Args:
        epsilon: the slack in the comparisons (>= 0).
        distance: CosineSimilarity by default.
        collect_stats: accepted for PML compatibility (this miner records no statistics).

    Example:
        >>> import torch
        >>> from metricssl.miners.multi_similarity_miner import MultiSimilarityMiner
        >>> miner = MultiSimilarityMiner(epsilon=0.1)
        >>> a1, p, a2, n = miner(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        check_number("epsilon", epsilon, low=0)
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.epsilon = epsilon
        self.add_to_recordable_attributes(name="epsilon", is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos, neg = pos_neg_masks(labels, ref_labels)
        if not (pos.any() and neg.any()):
            return empty_indices(mat.device, 4)
        pos_candidates, neg_candidates = ~neg, ~pos
        if embeddings is ref_emb:
            diagonal = torch.eye(*mat.shape, dtype=torch.bool, device=mat.device)
            pos_candidates &= ~diagonal
            neg_candidates &= ~diagonal
        big, small = c_f.pos_inf(mat.dtype), c_f.neg_inf(mat.dtype)
        # Left-out entries get the dtype's extremes, the values PML sorts them with.
        if self.distance.is_inverted:
            hardest_neg = mat.masked_fill(~neg_candidates, small).amax(dim=1, keepdim=True)
            hardest_pos = mat.masked_fill(~pos_candidates, big).amin(dim=1, keepdim=True)
            keep_pos = pos_candidates & (mat - self.epsilon < hardest_neg)
            keep_neg = neg_candidates & (mat + self.epsilon > hardest_pos)
        else:
            hardest_neg = mat.masked_fill(~neg_candidates, big).amin(dim=1, keepdim=True)
            hardest_pos = mat.masked_fill(~pos_candidates, small).amax(dim=1, keepdim=True)
            keep_pos = pos_candidates & (mat + self.epsilon > hardest_neg)
            keep_neg = neg_candidates & (mat - self.epsilon < hardest_pos)
        a1, p = torch.where(keep_pos)
        a2, n = torch.where(keep_neg)
        return a1, p, a2, n
