"""Fused reduction: a reducer's rule, applied by a loss while it computes, chunk by chunk.

A loss that never materialises its per-element losses (all triplets, say) asks its reducer
for a :class:`FusedReduction`. It then accumulates ``sum`` and ``count`` of the elements the
reducer would keep, and hands back an ``already_reduced`` entry of the loss dictionary, so
MultipleReducers and regularizers downstream work exactly as with PML's dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FusedReduction:
    """Keep elements with ``low < loss < high`` (bounds optional); take the mean or the sum."""

    low: float | None = None
    high: float | None = None
    mean: bool = True

    def keep_mask(self, losses: torch.Tensor) -> torch.Tensor | None:
        """Which of ``losses`` the reducer keeps (None: all of them)."""
        mask = None
        if self.low is not None:
            mask = losses > self.low
        if self.high is not None:
            high = losses < self.high
            mask = high if mask is None else mask & high
        return mask

    def partial(self, losses: torch.Tensor, valid: torch.Tensor | None = None):
        """(sum, count) over the kept entries of ``losses`` where ``valid`` is True."""
        keep = self.keep_mask(losses)
        if valid is not None:
            keep = valid if keep is None else keep & valid
        if keep is None:
            return losses.sum(), torch.tensor(losses.numel(), device=losses.device)
        return torch.where(keep, losses, 0).sum(), keep.sum()

    def finish(self, total: torch.Tensor, count: torch.Tensor, embeddings: torch.Tensor):
        """The reduced loss, or a zero that still back-propagates when nothing was kept."""
        zero = torch.sum(embeddings * 0)
        if not self.mean:
            return torch.where(count > 0, total.to(zero.dtype), zero)
        safe = torch.clamp(count, min=1).to(total.dtype)
        return torch.where(count > 0, (total / safe).to(zero.dtype), zero)

    def loss_entry(self, total, count, embeddings) -> dict:
        """The finished value as a PML loss-dictionary entry."""
        return {
            "losses": self.finish(total, count, embeddings),
            "indices": None,
            "reduction_type": "already_reduced",
        }
