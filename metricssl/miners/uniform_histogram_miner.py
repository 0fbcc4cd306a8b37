"""UniformHistogramMiner: pairs sampled evenly across the range of their distances."""

from __future__ import annotations

import torch

from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance
from .base_miner import BaseMiner


class UniformHistogramMiner(BaseMiner):
    """Splits the positive (and the negative) pair distances into ``num_bins`` equal-width
    bins and draws ``pos_per_bin`` (``neg_per_bin``) pairs from every non-empty bin,
    uniformly and with replacement.

    This miner comes from PML itself (Musgrave et al., "PyTorch Metric Learning",
    arXiv:2008.09164, 2020); it has no separate paper. Sampling every distance range equally
    keeps rare very easy and very hard pairs in the mined set.

    Same pairs as PML's ``UniformHistogramMiner``, with the same random draws: after
    ``torch.manual_seed(s)`` both return the same pairs. PML scans every pair once per bin;
    here each pair is binned once (``torch.bucketize``) and only the per-bin draws, one small
    ``torch.multinomial`` call per non-empty bin as in PML, remain a loop.

    Args:
        num_bins: number of equal-width bins between the smallest and largest distance (>= 1).
        pos_per_bin: positive pairs drawn per non-empty bin (>= 1).
        neg_per_bin: negative pairs drawn per non-empty bin (>= 1).
        distance: LpDistance by default.
        collect_stats: accepted for PML compatibility (this miner records no statistics).

    Example:
        >>> import torch
        >>> from metricssl.miners.uniform_histogram_miner import UniformHistogramMiner
        >>> miner = UniformHistogramMiner(num_bins=20, pos_per_bin=5, neg_per_bin=5)
        >>> a1, p, a2, n = miner(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        num_bins: int = 100,
        pos_per_bin: int = 10,
        neg_per_bin: int = 10,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        check_number("num_bins", num_bins, low=1, integer=True)
        check_number("pos_per_bin", pos_per_bin, low=1, integer=True)
        check_number("neg_per_bin", neg_per_bin, low=1, integer=True)
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.num_bins = num_bins
        self.pos_per_bin = pos_per_bin
        self.neg_per_bin = neg_per_bin
        self.add_to_recordable_attributes(
            list_of_names=["pos_per_bin", "neg_per_bin"], is_stat=False
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        pos, neg = pos_neg_masks(labels, ref_labels)
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        if len(a1) > 0:
            keep = self.sample_per_bin(mat[a1, p], self.pos_per_bin)
            a1, p = a1[keep], p[keep]
        if len(a2) > 0:
            keep = self.sample_per_bin(mat[a2, n], self.neg_per_bin)
            a2, n = a2[keep], n[keep]
        return a1, p, a2, n

    def get_bins(self, distances: torch.Tensor) -> torch.Tensor:
        return torch.linspace(
            torch.min(distances),
            torch.max(distances),
            steps=self.num_bins + 1,
            device=distances.device,
            dtype=distances.dtype,
        )

    def sample_per_bin(self, distances: torch.Tensor, per_bin: int) -> torch.Tensor:
        """Positions in ``distances`` of ``per_bin`` random members of each non-empty bin.

        Bin i holds ``edges[i] <= d < edges[i + 1]`` (the last bin is closed on the right).
        Bins are visited in order and each bin's members in their original order, so the
        draws match PML's one for one.
        """
        edges = self.get_bins(distances)
        last = self.num_bins - 1
        which = torch.bucketize(distances, edges, right=True) - 1
        in_range = (which >= 0) & ((which <= last) | (distances <= edges[-1]))
        in_range &= ~torch.isnan(distances)
        which = which.clamp(max=last).masked_fill(~in_range, self.num_bins)
        members = torch.sort(which, stable=True).indices
        counts = torch.bincount(which, minlength=self.num_bins + 1)[: self.num_bins]
        starts = torch.cumsum(counts, 0) - counts
        ones = torch.ones(int(counts.max()), device=distances.device, dtype=torch.float)
        picks = []
        for start, count in zip(starts.tolist(), counts.tolist()):
            if count:
                draw = torch.multinomial(ones[:count], per_bin, replacement=True)
                picks.append(members[start + draw])
        if not picks:  # only NaN distances
            return members[:0]
        return torch.cat(picks)
