"""Positive/negative masks from labels: the one place that decides which pairs exist.

A pair (i, j) is positive when the labels match and negative otherwise. When the reference
set is the query set itself, i is never its own positive (the diagonal is dropped) — PML
decides this by object identity (``ref_labels is labels``), and so do we.
"""

from __future__ import annotations

import torch


def is_self_reference(labels, ref_labels) -> bool:
    """PML's rule: the diagonal is a self-comparison iff no separate reference was given."""
    return ref_labels is None or ref_labels is labels


def pos_neg_masks(
    labels: torch.Tensor,
    ref_labels: torch.Tensor | None = None,
    rows: slice | None = None,
    exclude_self: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool masks ``(pos, neg)`` of shape (rows, len(ref_labels)).

    ``rows`` selects a block of anchors (for chunked work); ``exclude_self`` defaults to
    :func:`is_self_reference`.
    """
    if exclude_self is None:
        exclude_self = is_self_reference(labels, ref_labels)
    ref = labels if ref_labels is None else ref_labels
    rows = slice(0, labels.shape[0]) if rows is None else rows
    same = labels[rows].unsqueeze(1) == ref.unsqueeze(0)
    neg = ~same
    if exclude_self:
        idx = torch.arange(rows.start, rows.start + same.shape[0], device=same.device)
        same[torch.arange(same.shape[0], device=same.device), idx] = False
    return same, neg
