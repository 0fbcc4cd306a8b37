"""BatchHardMiner: each anchor's hardest positive and hardest negative."""

from __future__ import annotations

from ..distances import BaseDistance
from .batch_easy_hard_miner import BatchEasyHardMiner


class BatchHardMiner(BatchEasyHardMiner):
    """Per anchor, the farthest positive and the closest negative, as one triplet.

    The "batch hard" selection of Hermans, Beyer and Leibe, "In Defense of the Triplet Loss
    for Person Re-Identification", arXiv:1703.07737, 2017. Same triplets as PML's
    ``BatchHardMiner``: anchors with no positive or no negative are left out. For
    similarities (``distance.is_inverted``) farthest means smallest.

    Args:
        distance: LpDistance by default.
        collect_stats: record the easiest/hardest pairs and triplets on each call.

    Example:
        >>> import torch
        >>> from metricssl.miners.batch_hard_miner import BatchHardMiner
        >>> miner = BatchHardMiner()
        >>> anchors, positives, negatives = miner(torch.randn(16, 8), torch.arange(16) % 4)
        >>> len(anchors)
        16
    """

    def __init__(self, distance: BaseDistance | None = None, collect_stats: bool | None = None):
        super().__init__(
            pos_strategy=self.HARD,
            neg_strategy=self.HARD,
            distance=distance,
            collect_stats=collect_stats,
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        a, p, _, n = super().mine(embeddings, labels, ref_emb, ref_labels)
        return a, p, n
