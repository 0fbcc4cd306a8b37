"""TripletMarginMiner: triplets selected by how far they are from satisfying a margin."""

from __future__ import annotations

import torch

from ..core import chunking
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_choice, check_number
from ..distances import BaseDistance
from .anchor_blocks import empty_indices, padded_columns
from .base_miner import BaseMiner

TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


class TripletMarginMiner(BaseMiner):
    """Triplets ``(a, p, n)`` chosen by their margin ``m = d(a, n) - d(a, p)``.

    The semi-hard and hard triplet selection of Schroff, Kalenichenko and Philbin, "FaceNet: A
    Unified Embedding for Face Recognition and Clustering", CVPR 2015. Same triplets as PML's
    ``TripletMarginMiner``:

    - ``"all"``: every triplet that violates the margin, ``m <= margin``;
    - ``"hard"``: those with ``m <= 0`` too (the negative is at least as close as the positive);
    - ``"semihard"``: those with ``0 < m <= margin``;
    - ``"easy"``: every triplet that does not violate the margin, ``m > margin``.

    For similarities (``distance.is_inverted``) ``m = s(a, p) - s(a, n)``.

    PML lists every triplet of the batch (N^3 indices) and then filters. Here blocks of
    anchors are compared with their own positives and every negative, a (block x positives x
    M) tensor sized by :mod:`metricssl.core.chunking`, and only the kept triplets are
    listed. Their number can still be of order N^3: that is the nature of the output.

    Args:
        margin: the margin the triplets are measured against.
        type_of_triplets: ``"all"``, ``"hard"``, ``"semihard"`` or ``"easy"``.
        distance: LpDistance by default.
        collect_stats: record ``avg_triplet_margin``, ``pos_pair_dist`` and
            ``neg_pair_dist`` (means over all triplets of the batch) on each call.

    Example:
        >>> import torch
        >>> from metricssl.miners.triplet_margin_miner import TripletMarginMiner
        >>> miner = TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
        >>> anchors, positives, negatives = miner(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        margin: float = 0.2,
        type_of_triplets: str = "all",
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        check_number("margin", margin)
        check_choice("type_of_triplets", type_of_triplets, TRIPLET_TYPES)
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.margin = margin
        self.type_of_triplets = type_of_triplets
        self.add_to_recordable_attributes(list_of_names=["margin"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["avg_triplet_margin", "pos_pair_dist", "neg_pair_dist"],
            is_stat=True,
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos, neg = pos_neg_masks(labels, ref_labels)
        if self.collect_stats:
            self.set_stats(mat, pos, neg)
        # Anchors without a negative form no triplet: drop their positives up front.
        pos &= neg.any(dim=1, keepdim=True)
        # An empty batch (PML: no triplets) has no row to take the max of.
        n_pos_max = int(pos.sum(dim=1).max()) if pos.numel() else 0
        if n_pos_max == 0:
            return empty_indices(mat.device, 3)
        m = mat.shape[1]
        out = []
        # Per anchor: the margins (n_pos x M) in mat's dtype plus up to three bool masks.
        for rows in chunking.row_chunks(mat.shape[0], n_pos_max * m * (mat.element_size() + 3)):
            p_cols, p_valid = padded_columns(pos[rows])
            d = mat[rows]
            d_ap = d.gather(1, p_cols).unsqueeze(2)
            d_an = d.unsqueeze(1)
            # Same subtraction as PML, so ties and rounding give the same decisions.
            margins = d_ap - d_an if self.distance.is_inverted else d_an - d_ap
            keep = self.keep_condition(margins)
            keep &= p_valid.unsqueeze(2)
            keep &= neg[rows].unsqueeze(1)
            del margins
            b, j, n = torch.where(keep)
            del keep
            # torch.where's outputs are views of one (count x 3) buffer; copying n out lets
            # that buffer go, so each block keeps 3 int64 per triplet instead of 5.
            out.append((b + rows.start, p_cols[b, j], n.clone()))
            del b, j, n
        if len(out) == 1:
            return out[0]
        return tuple(torch.cat(parts) for parts in zip(*out))

    def keep_condition(self, margins: torch.Tensor) -> torch.Tensor:
        if self.type_of_triplets == "easy":
            return margins > self.margin
        keep = margins <= self.margin
        if self.type_of_triplets == "hard":
            keep &= margins <= 0
        elif self.type_of_triplets == "semihard":
            keep &= margins > 0
        return keep

    def set_stats(self, mat, pos, neg):
        """Means over all triplets, from per-anchor sums (no triplet list needed)."""
        with torch.no_grad():
            d = mat.double()
            n_pos = pos.sum(dim=1, keepdim=True).double()
            n_neg = neg.sum(dim=1, keepdim=True).double()
            count = float((n_pos * n_neg).sum())
            if count == 0:
                # PML takes the mean of an empty tensor.
                self.pos_pair_dist = self.neg_pair_dist = self.avg_triplet_margin = float("nan")
                return
            ap = float((torch.where(pos, d, 0) * n_neg).sum()) / count
            an = float((torch.where(neg, d, 0) * n_pos).sum()) / count
            self.pos_pair_dist, self.neg_pair_dist = ap, an
            self.avg_triplet_margin = ap - an if self.distance.is_inverted else an - ap
