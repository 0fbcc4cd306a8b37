"""HDCMiner: the hardest fraction of the positive and of the negative pairs."""

from __future__ import annotations

import math
import sys

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import check_indices_tuple, check_number
from ..distances import BaseDistance
from .base_miner import BaseMiner


class HDCMiner(BaseMiner):
    """Keeps the hardest ``filter_percentage`` of the positive pairs and of the negative pairs.

    The pair mining of Yuan, Yang and Zhang, "Hard-Aware Deeply Cascaded Embedding",
    ICCV 2017: positives are ranked by distance (farthest first), negatives by closeness
    (closest first), and the top ``ceil(filter_percentage * count)`` of each are kept. Same
    pairs as PML's ``HDCMiner``.

    Cascades: :meth:`set_idx_externally` makes the miner filter a given indices tuple (for
    example the previous stage's output) instead of all pairs of the batch, until
    :meth:`reset_idx`. As in PML, the mined pairs are stored in ``a1``, ``p``, ``a2``, ``n``
    and, while the indices are set externally, each call filters the previous call's result
    again.

    Args:
        filter_percentage: the fraction of pairs kept, in [0, 1].
        distance: LpDistance by default.
        collect_stats: accepted for PML compatibility (this miner records no statistics).

    Example:
        >>> import torch
        >>> from metricssl.miners.hdc_miner import HDCMiner
        >>> miner = HDCMiner(filter_percentage=0.3)
        >>> a1, p, a2, n = miner(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        filter_percentage: float = 0.5,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        # 0 keeps nothing, as in PML; above 1 PML fails inside topk (we say so).
        check_number("filter_percentage", filter_percentage, low=0, high=1)
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.filter_percentage = filter_percentage
        self.add_to_recordable_attributes(list_of_names=["filter_percentage"], is_stat=False)
        self.reset_idx()

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        if not self.was_set_externally:
            self.a1, self.p, self.a2, self.n = lmu.get_all_pairs_indices(labels, ref_labels)
        self.a1, self.p = self._hardest(mat, self.a1, self.p, self._farthest_first("pos"))
        self.a2, self.n = self._hardest(mat, self.a2, self.n, self._farthest_first("neg"))
        return self.a1, self.p, self.a2, self.n

    def _hardest(self, mat, anchors, others, largest: bool):
        if len(anchors) == 0:
            return anchors, others
        anchors, others = c_f.to_device(anchors, mat), c_f.to_device(others, mat)
        values = mat[anchors, others]
        k = int(math.ceil(self.filter_percentage * len(values)))
        idx = torch.topk(values, k=k, largest=largest).indices
        return anchors[idx], others[idx]

    def _farthest_first(self, name: str) -> bool:
        """Whether the hardest pairs of this kind have the largest values of the matrix."""
        hard_is_far = name == "pos"
        return hard_is_far != self.distance.is_inverted

    def set_idx_externally(self, external_indices_tuple, labels):
        """Filter ``external_indices_tuple`` (pairs or triplets; None: all pairs) from now on."""
        check_indices_tuple(external_indices_tuple, len(labels), sys.maxsize)
        self.a1, self.p, self.a2, self.n = lmu.convert_to_pairs(external_indices_tuple, labels)
        self.was_set_externally = True

    def reset_idx(self):
        """Go back to filtering all pairs of each batch."""
        self.a1, self.p, self.a2, self.n = None, None, None, None
        self.was_set_externally = False
