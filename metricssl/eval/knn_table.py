"""PML's metric helpers over a (queries x k) table of neighbour labels.

PML's import path ``pytorch_metric_learning.utils.accuracy_calculator`` re-exports them
(:mod:`metricssl.utils.accuracy_calculator`), and ``AccuracyCalculator.get_function_dict``
computes PML's values with them. PML's documentation uses them in custom metrics
(``calculate_<name>(self, knn_labels, query_labels, **kwargs)``), with PML's signatures and
values; they are built on :mod:`metricssl.eval.retrieval_metrics`, which the calculator itself
uses chunk by chunk.

Conventions (PML's): ``gt_labels`` is the query labels with a neighbour axis,
``query_labels[:, None]``; ``label_counts`` is ``(unique query labels, number of references
matching each)`` from :func:`get_label_match_counts`; ``label_comparison_fn(gt_labels,
knn_labels)`` gives a (queries x k) relevance table.
"""

from __future__ import annotations

import math

import torch

from ..core.chunking import row_chunks
from ..core.common import torch_all_from_dim_to_end
from . import retrieval_metrics as rm
from .accuracy_calculator import EQUALITY


def get_unique_labels(labels: torch.Tensor) -> torch.Tensor:
    """The distinct labels (rows, for multi-dimensional labels), sorted."""
    return torch.unique(labels, dim=0)


def _class_codes(sample_labels: torch.Tensor) -> torch.Tensor:
    return torch.unique(sample_labels, dim=0, return_inverse=True)[1].reshape(-1)


def maybe_get_avg_of_avgs(accuracy_per_sample, sample_labels, avg_of_avgs, return_per_class):
    """Mean over samples; or per class first and then over classes (``avg_of_avgs``); or the
    per-class list in ascending label order (``return_per_class``)."""
    return rm.average(
        accuracy_per_sample, _class_codes(sample_labels), avg_of_avgs, return_per_class
    )


def _count_per_query(gt_labels, ref_includes_query, label_counts) -> torch.Tensor:
    """Relevant references of each query: its label's count (minus itself when the
    reference includes the queries); 0 for a label not in ``label_counts``."""
    # PML's helpers also take label_counts as Python lists (its own tests pass them so).
    unique_labels, counts = (torch.as_tensor(x, device=gt_labels.device) for x in label_counts)
    n = gt_labels.shape[0]
    queries = gt_labels.reshape(n, -1)
    labels = unique_labels.reshape(unique_labels.shape[0], -1)
    out = torch.zeros(n, dtype=torch.long, device=gt_labels.device)
    counts = counts.to(device=gt_labels.device, dtype=torch.long) - int(bool(ref_includes_query))
    for rows in row_chunks(n, max(1, labels.shape[0]) * queries.shape[1]):
        same = (queries[rows, None, :] == labels[None, :, :]).all(dim=2)
        found = same.any(dim=1)
        out[rows] = torch.where(found, counts[same.long().argmax(dim=1)], 0)
    return out


def get_relevance_mask(shape, gt_labels, ref_includes_query, label_counts):
    """``(mask, count_per_query)``: ``mask[i, j]`` is True for the first R_i columns, R_i being
    query i's number of relevant references (its label's count, minus one when the reference
    includes the queries)."""
    count = _count_per_query(gt_labels, ref_includes_query, label_counts)
    num_k = shape[1]
    # PML fills columns [:R] with Python slicing, so a negative R counts from the end.
    limit = torch.where(count < 0, (num_k + count).clamp(min=0), count)
    mask = torch.arange(num_k, device=count.device)[None, :] < limit[:, None]
    return mask.expand(*shape) if len(shape) > 2 else mask, count


def _ranks(knn_labels, gt_labels, label_comparison_fn) -> rm.RankedRelevance:
    return rm.RankedRelevance(label_comparison_fn(gt_labels, knn_labels).to(torch.bool))


def r_precision(
    knn_labels,
    gt_labels,
    ref_includes_query,
    label_counts,
    avg_of_avgs,
    return_per_class,
    label_comparison_fn,
):
    """Relevant neighbours among the first R, divided by R (R capped at k)."""
    count = _count_per_query(gt_labels, ref_includes_query, label_counts)
    ranks = _ranks(knn_labels, gt_labels, label_comparison_fn)
    values = rm.r_precision(ranks, count, knn_labels.shape[1])
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def mean_average_precision(
    knn_labels,
    gt_labels,
    ref_includes_query,
    label_counts,
    avg_of_avgs,
    return_per_class,
    label_comparison_fn,
    at_r=False,
):
    """Average precision over the k neighbours (over the first R with ``at_r``: MAP@R),
    divided by R."""
    count = _count_per_query(gt_labels, ref_includes_query, label_counts)
    ranks = _ranks(knn_labels, gt_labels, label_comparison_fn)
    metric = rm.mean_average_precision_at_r if at_r else rm.mean_average_precision
    values = metric(ranks, count, knn_labels.shape[1])
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def mean_reciprocal_rank(knn_labels, gt_labels, avg_of_avgs, return_per_class, label_comparison_fn):
    """1 / rank of the first relevant neighbour (0 when none), in float32 as PML."""
    ranks = _ranks(knn_labels, gt_labels, label_comparison_fn)
    values = rm.mean_reciprocal_rank(ranks, knn_labels.shape[1])
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def precision_at_k(knn_labels, gt_labels, k, avg_of_avgs, return_per_class, label_comparison_fn):
    """Relevant neighbours among the first ``k``, divided by ``k``."""
    same_label = label_comparison_fn(gt_labels, knn_labels[:, :k])
    values = torch.sum(same_label, dim=1).to(torch.float64) / k
    return maybe_get_avg_of_avgs(values, gt_labels, avg_of_avgs, return_per_class)


def get_label_match_counts(query_labels, reference_labels, label_comparison_fn):
    """``(unique query labels, number of references matching each)``."""
    unique_query_labels = get_unique_labels(query_labels)
    counts = torch.empty(len(unique_query_labels), dtype=torch.long, device=query_labels.device)
    if label_comparison_fn is EQUALITY:
        per_row = max(1, reference_labels.numel())
        for rows in row_chunks(len(unique_query_labels), per_row):
            same = unique_query_labels[rows, None] == reference_labels
            counts[rows] = torch.sum(torch_all_from_dim_to_end(same, 2), dim=1)
    else:
        # A custom comparison may take labels that are not categories: one label at a time.
        for i in range(len(unique_query_labels)):
            counts[i] = torch.sum(
                label_comparison_fn(unique_query_labels[i : i + 1], reference_labels)
            )
    return unique_query_labels, counts


def get_lone_query_labels(query_labels, label_counts, ref_includes_query, label_comparison_fn):
    """``(lone query labels, mask of the queries whose label is not lone)``: a label is lone
    when no reference other than the query itself matches it."""
    unique_labels, match_counts = label_counts
    if ref_includes_query:
        matches_itself = label_comparison_fn(unique_labels, unique_labels).to(torch.long)
        lone = match_counts - matches_itself <= 0
    else:
        lone = match_counts == 0
    lone_query_labels = unique_labels[lone]
    if len(lone_query_labels) == 0:
        mask = torch.ones(query_labels.shape[0], dtype=torch.bool, device=query_labels.device)
        return lone_query_labels, mask
    same = query_labels[:, None] == lone_query_labels
    return lone_query_labels, ~torch.any(torch_all_from_dim_to_end(same, 2), dim=1)


def try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask):
    """The rows of the non-lone queries, or ``(None, None)`` when there are none."""
    if not bool(torch.as_tensor(not_lone_query_mask).any()):
        return None, None
    return knn_labels[not_lone_query_mask], query_labels[not_lone_query_mask]


def nan_accuracy(unique_labels, return_per_class):
    if return_per_class:
        return [math.nan] * len(unique_labels)
    return math.nan


__all__ = [
    "get_label_match_counts",
    "get_lone_query_labels",
    "get_relevance_mask",
    "get_unique_labels",
    "maybe_get_avg_of_avgs",
    "mean_average_precision",
    "mean_reciprocal_rank",
    "nan_accuracy",
    "precision_at_k",
    "r_precision",
    "try_getting_not_lone_labels",
]
