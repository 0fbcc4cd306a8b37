"""BatchEasyHardMiner: one positive and one negative per anchor, each easy, semi-hard or hard."""

from __future__ import annotations

import numbers

import torch

from ..core import common as c_f
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError, check_choice
from ..distances import BaseDistance
from .anchor_blocks import empty_indices
from .base_miner import BaseMiner


def check_range(name: str, value) -> None:
    """None or a ``(low, high)`` pair of numbers (low > high allows nothing, as in PML)."""
    if value is None:
        return
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be None or a (low, high) pair of numbers, got {value!r}")


class BatchEasyHardMiner(BaseMiner):
    """Per anchor, the easiest/hardest/semi-hard positive and negative of the batch.

    Xuan, Stylianou, Liu and Pless, "Improved Embeddings with Easy Positive Triplet Mining",
    WACV 2020. Same output as PML's ``BatchEasyHardMiner``.

    Strategies (``"easy"``, ``"semihard"``, ``"hard"``, ``"all"``), for a distance:

    - positive: ``"easy"`` the closest, ``"hard"`` the farthest, ``"semihard"`` the farthest
      that is still closer than the anchor's chosen negative, ``"all"`` every positive;
    - negative: ``"easy"`` the farthest, ``"hard"`` the closest, ``"semihard"`` the closest
      that is still farther than the anchor's chosen positive, ``"all"`` every negative.

    (For similarities, closer means larger.) ``allowed_pos_range`` / ``allowed_neg_range``
    ``(low, high)`` leave out pairs whose distance is outside ``[low, high]``. When neither
    strategy is ``"all"``, an anchor is kept only if it has both a positive and a negative,
    and the output is ``(a, p, a, n)``; otherwise each side lists its own anchors. As in PML,
    both strategies cannot be ``"semihard"``, and ``"semihard"`` cannot be paired with
    ``"all"`` (each semi-hard choice needs a single pair on the other side).

    Args:
        pos_strategy: ``"easy"``, ``"semihard"``, ``"hard"`` or ``"all"``.
        neg_strategy: ``"easy"``, ``"semihard"``, ``"hard"`` or ``"all"``.
        allowed_pos_range: None or ``(low, high)`` for positive pairs.
        allowed_neg_range: None or ``(low, high)`` for negative pairs.
        distance: LpDistance by default.
        collect_stats: record the easiest/hardest pairs and triplets on each call.

    Example:
        >>> import torch
        >>> from metricssl.miners.batch_easy_hard_miner import BatchEasyHardMiner
        >>> miner = BatchEasyHardMiner(pos_strategy="easy", neg_strategy="semihard")
        >>> a1, p, a2, n = miner(torch.randn(32, 8), torch.randint(0, 4, (32,)))
    """

    HARD = "hard"
    SEMIHARD = "semihard"
    EASY = "easy"
    ALL = "all"
    all_batch_mining_strategies = [HARD, SEMIHARD, EASY, ALL]

    def __init__(
        self,
        pos_strategy: str = EASY,
        neg_strategy: str = SEMIHARD,
        allowed_pos_range: tuple[float, float] | None = None,
        allowed_neg_range: tuple[float, float] | None = None,
        distance: BaseDistance | None = None,
        collect_stats: bool | None = None,
    ):
        check_choice("pos_strategy", pos_strategy, self.all_batch_mining_strategies)
        check_choice("neg_strategy", neg_strategy, self.all_batch_mining_strategies)
        if pos_strategy == neg_strategy == self.SEMIHARD:
            raise ArgumentError('pos_strategy and neg_strategy cannot both be "semihard"')
        if {pos_strategy, neg_strategy} == {self.SEMIHARD, self.ALL}:
            raise ArgumentError('"semihard" cannot be used in combination with "all"')
        check_range("allowed_pos_range", allowed_pos_range)
        check_range("allowed_neg_range", allowed_neg_range)
        super().__init__(distance=distance, collect_stats=collect_stats)
        self.pos_strategy = pos_strategy
        self.neg_strategy = neg_strategy
        self.allowed_pos_range = allowed_pos_range
        self.allowed_neg_range = allowed_neg_range
        self.add_to_recordable_attributes(
            list_of_names=[
                "easiest_triplet",
                "hardest_triplet",
                "easiest_pos_pair",
                "hardest_pos_pair",
                "easiest_neg_pair",
                "hardest_neg_pair",
            ],
            is_stat=True,
        )

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        mat = self.distance(embeddings, ref_emb)
        if mat.numel() == 0:  # an empty batch: no pair (PML fails in a max over nothing)
            return empty_indices(mat.device, 4)
        pos, neg = pos_neg_masks(labels, ref_labels)
        pos_args = (pos, self._pos_extreme(), self.allowed_pos_range)
        neg_args = (neg, self._neg_extreme(), self.allowed_neg_range)
        # A semi-hard side is chosen relative to the other side's pick, so that goes first.
        picks = {}
        if self.pos_strategy == self.SEMIHARD:
            picks["neg"] = self._pick(mat, *neg_args)
            picks["pos"] = self._pick(mat, *pos_args, thresholds=picks["neg"][0])
        elif self.neg_strategy == self.SEMIHARD:
            picks["pos"] = self._pick(mat, *pos_args)
            picks["neg"] = self._pick(mat, *neg_args, thresholds=picks["pos"][0])
        else:
            if self.pos_strategy != self.ALL:
                picks["pos"] = self._pick(mat, *pos_args)
            if self.neg_strategy != self.ALL:
                picks["neg"] = self._pick(mat, *neg_args)

        anchors = torch.arange(mat.shape[0], device=mat.device)
        if "pos" in picks and "neg" in picks:
            (pos_d, p, pos_ok), (neg_d, n, neg_ok) = picks["pos"], picks["neg"]
            keep = pos_ok & neg_ok
            self.set_stats(pos_d[keep], neg_d[keep])
            a = anchors[keep]
            return a, p[keep], a, n[keep]
        if "neg" in picks:
            neg_d, n, neg_ok = picks["neg"]
            a1, p = torch.where(pos)
            self.set_stats(mat[a1, p], neg_d[neg_ok])
            return a1, p, anchors[neg_ok], n[neg_ok]
        if "pos" in picks:
            pos_d, p, pos_ok = picks["pos"]
            a2, n = torch.where(neg)
            self.set_stats(pos_d[pos_ok], mat[a2, n])
            return anchors[pos_ok], p[pos_ok], a2, n
        a1, p = torch.where(pos)
        a2, n = torch.where(neg)
        self.set_stats(mat[a1, p], mat[a2, n])
        return a1, p, a2, n

    def _pos_extreme(self) -> str:
        """Whether the chosen positive is the row's "min" or "max" entry of ``mat``."""
        farthest = self.pos_strategy in (self.HARD, self.SEMIHARD)
        return "min" if farthest == self.distance.is_inverted else "max"

    def _neg_extreme(self) -> str:
        closest = self.neg_strategy in (self.HARD, self.SEMIHARD)
        return "max" if closest == self.distance.is_inverted else "min"

    def _pick(self, mat, mask, extreme, allowed_range, thresholds=None):
        """Per row: (value, column, found) of the min or max of ``mat`` over allowed entries.

        A semi-hard pick must be strictly beyond the threshold (the other side's pick) in the
        direction it searches. Left-out entries are filled with the dtype's extreme, as PML
        does, so the reduction (and its tie-breaking) sees the same matrix as PML's.
        """
        allowed = mask.clone()
        if thresholds is not None:
            thresholds = thresholds.unsqueeze(1)
            allowed &= ~(mat <= thresholds if extreme == "min" else mat >= thresholds)
        if allowed_range is not None:
            allowed &= ~((mat > allowed_range[1]) | (mat < allowed_range[0]))
        fill = c_f.pos_inf(mat.dtype) if extreme == "min" else c_f.neg_inf(mat.dtype)
        reduce = torch.min if extreme == "min" else torch.max
        values, cols = reduce(mat.masked_fill(~allowed, fill), dim=1)
        return values, cols, allowed.any(dim=1)

    def set_stats(self, positive_dists, negative_dists):
        if not self.collect_stats:
            return
        closest, farthest = self._closest_farthest()
        n_pos, n_neg = len(positive_dists), len(negative_dists)
        if n_pos > 0 and n_neg > 0 and self.ALL not in (self.pos_strategy, self.neg_strategy):
            # Triplet "difficulty" d(a, p) - d(a, n) in PML's convention.
            diff = positive_dists - negative_dists
            self.easiest_triplet = closest(diff).item()
            self.hardest_triplet = farthest(diff).item()
        if n_pos > 0:
            self.easiest_pos_pair = closest(positive_dists).item()
            self.hardest_pos_pair = farthest(positive_dists).item()
        if n_neg > 0:
            self.easiest_neg_pair = farthest(negative_dists).item()
            self.hardest_neg_pair = closest(negative_dists).item()

    def _closest_farthest(self):
        if self.distance.is_inverted:
            return torch.max, torch.min
        return torch.min, torch.max
