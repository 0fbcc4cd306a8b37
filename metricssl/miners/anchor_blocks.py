"""Each anchor's positives as a padded column list, for miners that walk blocks of anchors.

Triplet miners compare every (anchor, positive) with every negative. Working on a
(block x max_positives x M) tensor instead of (block x M x M) keeps the work and memory
proportional to the positives that exist, which is far less than M when classes are many.
"""

from __future__ import annotations

import torch


def padded_columns(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cols, valid)``, both (rows, k) with k the most True entries in a row.

    ``cols[r, :count_r]`` are the True columns of row ``r`` in ascending order; the rest
    is padding (column 0) with ``valid`` False.
    """
    counts = mask.sum(dim=1)
    k = int(counts.max()) if mask.numel() else 0
    rows, cols = torch.where(mask)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(rows.numel(), device=mask.device) - starts[rows]
    out = torch.zeros(mask.shape[0], k, dtype=torch.long, device=mask.device)
    out[rows, slots] = cols
    valid = torch.arange(k, device=mask.device) < counts.unsqueeze(1)
    return out, valid


def empty_indices(device, count: int) -> tuple[torch.Tensor, ...]:
    """``count`` empty int64 index tensors on ``device`` (a miner that found nothing)."""
    return tuple(torch.empty(0, dtype=torch.long, device=device) for _ in range(count))
