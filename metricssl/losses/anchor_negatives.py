"""Losses with one term per positive pair built from per-row sums over negatives.

PML's LiftedStructureLoss and TupletMarginLoss compare every positive pair with every
negative pair and keep those that share a row: a (#pos x #neg) object. Their per-pair terms
only need, for each query row ``r``, ``log sum_n w_rn exp(x_rn)`` over that row's negatives
(``w_rn`` = how many times pair (r, n) was given, 1 without a miner), so one pass over the
N x M matrix suffices. :class:`NegativeRowsPairLoss` holds the shared call logic.
"""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from .base_metric_loss_function import require_labels_or_indices_tuple, require_ref_labels
from .generic_pair_loss import GenericPairLoss


def pair_counts(rows: torch.Tensor, cols: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    """How many times each (row, col) pair occurs in the lists, as a dense ``shape`` matrix.

    A miner may return a pair several times (one per triplet, say); PML counts every copy.
    """
    counts = torch.zeros(shape, dtype=dtype, device=rows.device)
    counts.index_put_((rows, cols), torch.ones(len(rows), dtype=dtype, device=rows.device), True)
    return counts


def anchor_logsumexp(x: torch.Tensor, weight: torch.Tensor):
    """``(lse, has)``: per row, ``log sum_n weight_rn exp(x_rn)`` and whether any weight > 0.

    ``weight`` is a bool mask or a count matrix. Both outputs have shape (rows, 1); rows with
    no term give a finite placeholder (0) in ``lse``, so callers mask them with ``has``
    without NaN gradients.
    """
    if weight.dtype == torch.bool:
        keep = weight
    else:
        keep = weight > 0
        # A pair listed k times adds k exp(x) = exp(x + log k).
        x = x + torch.log(torch.where(keep, weight, torch.ones_like(weight))).to(x.dtype)
    return lmu.masked_logsumexp(x, keep), keep.any(dim=1, keepdim=True)


class NegativeRowsPairLoss(GenericPairLoss):
    """Base of losses with one value per positive pair, PML's ``pos_pair`` reduction.

    Subclasses implement ``_pair_losses(mat, neg_weight, rows, cols, pos_values)``: the
    losses of positive pairs (rows, cols) (broadcastable index tensors) with matrix values
    ``pos_values``, given ``neg_weight`` (a bool mask or count matrix of the negative pairs).

    Without an ``indices_tuple`` and with a fusable reducer the losses are computed on the
    whole matrix and reduced over the positive mask, without listing pairs; otherwise they
    are returned per pair in PML's order, as PML does. As in PML, the loss is zero when there
    is no positive pair or no negative pair at all.
    """

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        if indices_tuple is None:
            if not self._has_pairs(labels, ref_labels):
                return self.zero_losses()
            pos, neg = pos_neg_masks(labels, ref_labels)
            fused = self.fused_reduction("loss")
            if fused is not None:
                mat = self.distance(embeddings, ref_emb)
                self._set_stats(mat, pos, neg)
                rows = torch.arange(mat.shape[0], device=mat.device).unsqueeze(1)
                cols = torch.arange(mat.shape[1], device=mat.device).unsqueeze(0)
                losses = self._pair_losses(mat, neg, rows, cols, mat)
                total, count = fused.partial(losses, pos & neg.any())
                return {"loss": fused.loss_entry(total, count, embeddings)}
            # Without a fused reducer the pairs are listed (torch.where waits for the device
            # anyway); the read after it finds the device idle. PML's zero-loss rule.
            a1, p = torch.where(pos)
            if len(a1) == 0 or not bool(neg.any()):
                return self.zero_losses()
            neg_pairs = neg
        else:
            a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
            if all(len(x) <= 1 for x in (a1, p, a2, n)) or len(a1) == 0 or len(a2) == 0:
                return self.zero_losses()
            neg_pairs = (a2, n)
        mat = self.distance(embeddings, ref_emb)
        self._set_stats(mat, (a1, p), neg_pairs)
        if isinstance(neg_pairs, tuple):
            neg_weight = pair_counts(*neg_pairs, mat.shape, c_f.accumulation_dtype(mat.dtype))
        else:
            neg_weight = neg_pairs
        losses = self._pair_losses(mat, neg_weight, a1, p, mat[a1, p])
        return {
            "loss": {
                # (pairs, 1), the shape PML's per-pair log-sum-exp gives.
                "losses": losses.to(mat.dtype).unsqueeze(1),
                "indices": (a1, p),
                "reduction_type": "pos_pair",
            }
        }

    def _pair_losses(self, mat, neg_weight, rows, cols, pos_values):
        raise NotImplementedError

    def _set_stats(self, mat, pos_pairs, neg_pairs):
        """Record statistics; ``mat[pos_pairs]`` / ``mat[neg_pairs]`` are the pair values."""
