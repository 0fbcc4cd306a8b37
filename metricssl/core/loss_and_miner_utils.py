"""The indices tuples of losses and miners, and the masked log-sum-exp they share.

Pairs ``(a1, p, a2, n)`` and triplets ``(a, p, n)`` from labels, conversions between them,
per-element weights, with PML's names, arguments and outputs (PML's
``utils.loss_and_miner_utils`` re-exports them with its other helpers).
``get_all_triplets_indices`` builds its output from the positive and negative masks, so it
never allocates an N x N x N tensor.

Example:
    >>> import torch
    >>> from metricssl.core.loss_and_miner_utils import get_all_pairs_indices
    >>> a1, p, a2, n = get_all_pairs_indices(torch.tensor([0, 0, 1]))
    >>> a1.tolist(), p.tolist()
    ([0, 1], [1, 0])
"""

from __future__ import annotations

import torch

from . import common as c_f
from .pair_masks import pos_neg_masks


def masked_logsumexp(x: torch.Tensor, keep: torch.Tensor, add_one: bool = False) -> torch.Tensor:
    """``log(sum_{j kept} exp(x_ij) [+ 1])`` per row of a 2D ``x``, shape (rows, 1).

    Rows with nothing kept give 0 (without ``add_one``), with no NaN in the gradient. One
    ``exp`` per entry: no (rows x cols+1) concatenation, and backward reuses the forward
    ``exp`` instead of recomputing it as ``torch.logsumexp`` does — about twice as fast.
    Half-precision inputs are summed in float32 and the result is cast back.
    """
    dtype = x.dtype
    if x.shape[1] == 0:  # nothing to keep in any row (an empty batch): 0, still in the graph
        return x.sum(dim=1, keepdim=True)
    x = x.to(c_f.accumulation_dtype(dtype)).masked_fill(~keep, float("-inf"))
    # The shift is a constant for autograd; the result does not depend on it.
    shift = x.detach().amax(dim=1, keepdim=True)
    if add_one:
        shift = shift.clamp(min=0)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.exp(x - shift).sum(dim=1, keepdim=True)
    if add_one:
        total = total + torch.exp(-shift)
    out = shift + torch.log(torch.where(total > 0, total, torch.ones_like(total)))
    return out.to(dtype)


def logsumexp(x, keep_mask=None, add_one=True, dim=1):
    """PML's helper: log-sum-exp over ``dim`` of a 2D ``x``'s kept entries; with ``add_one``
    a 0 joins each row. Rows with nothing kept give 0 (not -inf), as in PML.
    """
    keep = torch.ones_like(x, dtype=torch.bool) if keep_mask is None else keep_mask.bool()
    if dim in (0, -2):
        return masked_logsumexp(x.t(), keep.t(), add_one).t()
    return masked_logsumexp(x, keep, add_one)


def get_all_pairs_indices(labels, ref_labels=None):
    """(a1, p, a2, n): every positive pair and every negative pair."""
    pos, neg = pos_neg_masks(labels, ref_labels)
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    return a1, p, a2, n


def convert_to_pairs(indices_tuple, labels, ref_labels=None):
    """Pairs (a1, p, a2, n) from None (all pairs), a pair tuple, or a triplet tuple."""
    if indices_tuple is None:
        return get_all_pairs_indices(labels, ref_labels)
    if len(indices_tuple) == 4:
        return indices_tuple
    a, p, n = indices_tuple
    return a, p, a, n


def pos_pairs_from_tuple(indices_tuple):
    return indices_tuple[:2]


def neg_pairs_from_tuple(indices_tuple):
    return indices_tuple[2:]


def triplets_from_masks(pos: torch.Tensor, neg: torch.Tensor):
    """Every (a, p, n) with pos[a, p] and neg[a, n], in (a, p, n) lexicographic order.

    Memory is proportional to the number of triplets, not to N^3.
    """
    a, p = torch.where(pos)
    n_neg = neg.sum(dim=1)
    reps = n_neg[a]
    pair_id = torch.repeat_interleave(torch.arange(len(a), device=pos.device), reps)
    neg_cols = torch.where(neg)[1]
    neg_start = torch.cumsum(n_neg, 0) - n_neg
    out_start = torch.cumsum(reps, 0) - reps
    local = torch.arange(pair_id.numel(), device=pos.device) - out_start[pair_id]
    a_out = a[pair_id]
    return a_out, p[pair_id], neg_cols[neg_start[a_out] + local]


def get_all_triplets_indices(labels, ref_labels=None):
    pos, neg = pos_neg_masks(labels, ref_labels)
    return triplets_from_masks(pos, neg)


def get_random_triplet_indices(labels, ref_labels=None, t_per_anchor=None, weights=None):
    """Random triplets, ``t_per_anchor`` per anchor (all positives' count when None).

    Draws from torch's global generator in the same order as PML, so a seeded call gives
    PML's triplets.
    """
    device = labels.device
    self_ref = ref_labels is None or ref_labels is labels
    ref_labels = labels if ref_labels is None else ref_labels
    a_all, p_all, n_all = [], [], []
    for label in torch.unique(labels):
        p_inds = torch.where(ref_labels == label)[0]
        a_inds = p_inds if self_ref else torch.where(labels == label)[0]
        n_inds = torch.where(ref_labels != label)[0]
        n_a, n_p = len(a_inds), len(p_inds)
        if n_p < (2 if self_ref else 1) or len(n_inds) < 1:
            continue
        k = n_p if t_per_anchor is None else t_per_anchor
        num = n_a * k
        candidates = p_inds.expand((n_a, n_p))
        if self_ref:
            # An anchor is never its own positive.
            candidates = candidates[~torch.eye(n_a, dtype=torch.bool, device=device)]
            candidates = candidates.view(n_a, n_a - 1)
        which_p = torch.randint(0, candidates.shape[1], (num,))
        anchor_row = torch.arange(n_a).view(-1, 1).repeat(1, k).view(num)
        p = candidates[anchor_row.to(device), which_p.to(device)]
        a = a_inds[anchor_row.to(device)]
        if weights is not None:
            w = weights[:, n_inds][a]
            keep = torch.where(torch.sum(w, dim=1) > 0)[0]
            if len(keep) == 0:
                continue
            w, a, p = w[keep], a[keep], p[keep]
            if w.dtype == torch.float16:
                w = w.float()
            which_n = torch.multinomial(w, 1, replacement=True).flatten()
        else:
            which_n = torch.randint(0, len(n_inds), (num,))
        a_all.append(a)
        p_all.append(p)
        n_all.append(n_inds[which_n.to(device)])
    if not a_all:
        empty = torch.tensor([], device=device, dtype=torch.long)
        return empty.clone(), empty.clone(), empty.clone()
    return tuple(torch.cat(x).to(device=device, dtype=torch.long) for x in (a_all, p_all, n_all))


def convert_to_triplets(indices_tuple, labels, ref_labels=None, t_per_anchor=100):
    """Triplets (a, p, n) from None (all or random), a triplet tuple, or a pair tuple.

    A pair tuple becomes every (a, p, n) whose positive and negative pair share the anchor.
    """
    if indices_tuple is None:
        if t_per_anchor == "all":
            return get_all_triplets_indices(labels, ref_labels)
        return get_random_triplet_indices(labels, ref_labels, t_per_anchor=t_per_anchor)
    if len(indices_tuple) == 3:
        return indices_tuple
    a1, p, a2, n = indices_tuple
    p_idx, n_idx = torch.where(a1.unsqueeze(1) == a2)
    return a1[p_idx], p[p_idx], n[n_idx]


def get_anchors(indices_tuple):
    if len(indices_tuple) == 3:
        return indices_tuple[0]
    return torch.cat([indices_tuple[0], indices_tuple[2]], dim=0)


def convert_to_weights(indices_tuple, labels, dtype, using_ref=False):
    """A weight per batch element: how often it appears in the tuple, over the max count."""
    weights = torch.zeros(labels.shape[0], device=labels.device, dtype=dtype)
    if indices_tuple is None or all(len(x) == 0 for x in indices_tuple):
        return weights + 1
    indices = get_anchors(indices_tuple) if using_ref else torch.cat(indices_tuple, dim=0)
    indices, counts = torch.unique(indices, return_counts=True)
    weights[indices] = counts.to(dtype) / torch.max(counts)
    return weights
