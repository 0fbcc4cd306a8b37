"""PML's import path ``pytorch_metric_learning.utils.loss_and_miner_utils``.

The helpers the package's losses and miners call live in
:mod:`metricssl.core.loss_and_miner_utils` and are re-exported here; the rest of PML's helpers
of this module follow, with its names, arguments and outputs (the triplet methods build their
output from the masks, without PML's N x N x N product).

Example:
    >>> import torch
    >>> from metricssl.utils import loss_and_miner_utils as lmu
    >>> a, p, n = lmu.get_all_triplets_indices(torch.tensor([0, 0, 1]))
    >>> a.tolist(), p.tolist(), n.tolist()
    ([0, 1], [1, 0], [2, 2])
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.loss_and_miner_utils import (
    convert_to_pairs,
    convert_to_triplets,
    convert_to_weights,
    get_all_pairs_indices,
    get_all_triplets_indices,
    get_anchors,
    get_random_triplet_indices,
    logsumexp,
    masked_logsumexp,
    neg_pairs_from_tuple,
    pos_pairs_from_tuple,
    triplets_from_masks,
)
from ..core.pair_masks import is_self_reference, pos_neg_masks
from ..core.validation import ArgumentError


def meshgrid_from_sizes(x, y, dim=0):
    a = torch.arange(x.size(dim), device=x.device)
    b = torch.arange(y.size(dim), device=y.device)
    return torch.meshgrid(a, b, indexing="ij")


def get_matches_and_diffs(labels, ref_labels=None):
    """uint8 matrices (matches, diffs); the diagonal of matches is 0 for a self-reference."""
    pos, neg = pos_neg_masks(labels, ref_labels)
    return pos.byte(), neg.byte()


def convert_to_pos_pairs_with_unique_labels(indices_tuple, labels):
    a, p, _, _ = convert_to_pairs(indices_tuple, labels)
    _, unique_idx = np.unique(labels[a].cpu().numpy(), return_index=True)
    return a[unique_idx], p[unique_idx]


def get_all_triplets_indices_vectorized_method(all_matches, all_diffs):
    """PML's helper: every (a, p, n) with ``all_matches[a, p]`` and ``all_diffs[a, n]``, in
    (a, p, n) order — built from the masks, without PML's N x N x N product."""
    return triplets_from_masks(all_matches.bool(), all_diffs.bool())


def get_all_triplets_indices_loop_method(labels, all_matches, all_diffs):
    """PML's per-anchor variant of :func:`get_all_triplets_indices_vectorized_method`; the
    same triplets in the same order (all int64, where PML gives anchors the labels' dtype)."""
    return triplets_from_masks(all_matches.bool(), all_diffs.bool())


def repeat_to_match_size(smaller_set, larger_size, smaller_size):
    num_repeat = math.ceil(float(larger_size) / float(smaller_size))
    return smaller_set.repeat(num_repeat)[:larger_size]


def matched_size_indices(curr_p_idx, curr_n_idx):
    num_pos, num_neg = len(curr_p_idx), len(curr_n_idx)
    if num_pos > num_neg:
        return curr_p_idx, repeat_to_match_size(curr_n_idx, num_pos, num_neg)
    return repeat_to_match_size(curr_p_idx, num_neg, num_pos), curr_n_idx


def not_self_comparisons(a, p, s, e, curr_batch_idx, ref_size, ref_is_subset=False):
    """Mask of pairs that are not an embedding compared with its own copy in a queue."""
    if ref_is_subset:
        a, p = p, a
    in_batch = torch.any(p.unsqueeze(1) == curr_batch_idx, dim=1)
    a_c, p_c = a[in_batch], p[in_batch] - s
    if e <= s:  # the batch wrapped around the end of the queue
        p_c[p_c <= e - s] += ref_size
    keep = in_batch.clone()
    keep[torch.where(in_batch)[0][a_c == p_c]] = False
    return keep | ~in_batch


def remove_self_comparisons(indices_tuple, curr_batch_idx, ref_size, ref_is_subset=False):
    """Drop positive pairs that compare a query with itself in a memory queue."""
    if len(indices_tuple) not in (3, 4):
        raise ArgumentError("indices_tuple must have 3 or 4 elements")
    s, e = curr_batch_idx[0], curr_batch_idx[-1]
    keep = not_self_comparisons(
        indices_tuple[0], indices_tuple[1], s, e, curr_batch_idx, ref_size, ref_is_subset
    )
    if len(indices_tuple) == 3:
        return tuple(x[keep] for x in indices_tuple)
    a1, p, a2, n = indices_tuple
    return a1[keep], p[keep], a2, n


__all__ = [
    "logsumexp",
    "masked_logsumexp",
    "meshgrid_from_sizes",
    "get_matches_and_diffs",
    "get_all_pairs_indices",
    "convert_to_pairs",
    "convert_to_pos_pairs_with_unique_labels",
    "pos_pairs_from_tuple",
    "neg_pairs_from_tuple",
    "triplets_from_masks",
    "get_all_triplets_indices",
    "get_all_triplets_indices_vectorized_method",
    "get_all_triplets_indices_loop_method",
    "get_random_triplet_indices",
    "repeat_to_match_size",
    "matched_size_indices",
    "convert_to_triplets",
    "convert_to_weights",
    "get_anchors",
    "remove_self_comparisons",
    "not_self_comparisons",
    "is_self_reference",
]
