"""Retrieval metrics from the ranks of the relevant neighbours, with PML's definitions.

For one query chunk the input is ``relevant``: a (queries, K) bool tensor, True where the
neighbour at that rank is relevant (same label), nearest first. Every metric depends only on the
ranks at which relevant neighbours occur, so :class:`RelevantRanks` lists those (one entry per
relevant neighbour, not per neighbour) and each metric is a sum over them.

With R the number of relevant references of a query (itself excluded) and k PML's ``k`` (how
many ranks PML's k-NN search returns, so how many count):

- ``precision_at_1``: whether the nearest neighbour is relevant;
- ``r_precision``: relevant among the first min(R, k) ranks, divided by min(R, k);
- ``mean_average_precision_at_r``: sum over relevant ranks i <= min(R, k) of precision@i,
  divided by R (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", ECCV 2020);
- ``mean_average_precision``: the same sum over relevant ranks i <= k, divided by R (over a
  full ranking, k = all references, this is the usual average precision);
- ``mean_reciprocal_rank``: 1 / (rank of the first relevant neighbour), 0 if none in k ranks;
- ``recall_at_k``: whether a relevant neighbour is among the first k (Recall@K of Song, Xiang,
  Jegelka and Savarese, "Deep Metric Learning via Lifted Structured Feature Embedding",
  CVPR 2016).

precision@i is (relevant among the first i) / i. Values are float64 except the reciprocal rank,
which PML computes in float32 (kept, so that its averages agree with PML's to the last bit).
:func:`average` averages over queries, or per class first (``avg_of_avgs``), or returns the
per-class list, as PML's ``maybe_get_avg_of_avgs``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RelevantRanks(NamedTuple):
    """Every relevant neighbour of a chunk: its query row, its rank (1-based) and its place
    among that query's relevant neighbours (1-based). Sorted by row, then rank."""

    row: torch.Tensor
    rank: torch.Tensor
    place: torch.Tensor
    first: torch.Tensor  # (rows,) rank of each row's first relevant neighbour, 0 if none
    n_rows: int


def relevant_ranks(relevant: torch.Tensor) -> RelevantRanks:
    n_rows = relevant.shape[0]
    row, col = relevant.nonzero(as_tuple=True)  # row-major: by row, then rank
    counts = torch.bincount(row, minlength=n_rows)
    starts = counts.cumsum(0) - counts
    rank = col + 1
    place = torch.arange(1, row.numel() + 1, device=row.device) - starts[row]
    first = torch.zeros(n_rows, dtype=torch.long, device=row.device)
    has = counts > 0
    first[has] = rank[starts[has]]
    return RelevantRanks(row, rank, place, first, n_rows)


def _sum_per_row(ranks: RelevantRanks, values: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(ranks.n_rows, dtype=values.dtype, device=values.device)
    return out.index_add_(0, ranks.row, values)


def _sum_of_precisions(ranks: RelevantRanks, limit: torch.Tensor) -> torch.Tensor:
    """Per row: sum of precision@i over its relevant ranks i <= limit[row]."""
    precision = ranks.place.to(torch.float64) / ranks.rank
    return _sum_per_row(ranks, precision.masked_fill_(ranks.rank > limit[ranks.row], 0.0))


def precision_at_1(ranks: RelevantRanks) -> torch.Tensor:
    return (ranks.first == 1).to(torch.float64)


def r_precision(ranks: RelevantRanks, num_relevant: torch.Tensor, num_k: int) -> torch.Tensor:
    limit = num_relevant.clamp(max=num_k)
    hits = _sum_per_row(ranks, (ranks.rank <= limit[ranks.row]).to(torch.long))
    # R = 0 (possible only with a custom label comparison) gives 0/0 = NaN, as in PML.
    return hits.to(torch.float64) / limit


def mean_average_precision_at_r(
    ranks: RelevantRanks, num_relevant: torch.Tensor, num_k: int
) -> torch.Tensor:
    return _sum_of_precisions(ranks, num_relevant.clamp(max=num_k)) / num_relevant


def mean_average_precision(
    ranks: RelevantRanks, num_relevant: torch.Tensor, num_k: int
) -> torch.Tensor:
    limit = torch.full_like(num_relevant, num_k)
    return _sum_of_precisions(ranks, limit) / num_relevant


def mean_reciprocal_rank(ranks: RelevantRanks, num_k: int) -> torch.Tensor:
    found = (ranks.first > 0) & (ranks.first <= num_k)
    return torch.where(found, 1.0 / ranks.first.to(torch.float32), 0.0)


def recall_at_k(ranks: RelevantRanks, k: int) -> torch.Tensor:
    return ((ranks.first > 0) & (ranks.first <= k)).to(torch.float64)


def average(
    values: torch.Tensor,
    class_codes: torch.Tensor,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
) -> float | list[float]:
    """Mean over queries; or per class (classes in ascending code order) and then their mean.

    Args:
        values: (n,) per-query values.
        class_codes: (n,) int64 class code of each query.
        avg_of_avgs: average the per-class means (each class counts equally).
        return_per_class: return the list of per-class means instead.
    """
    if not (avg_of_avgs or return_per_class):
        return torch.mean(values).item()
    _, inverse = torch.unique(class_codes, sorted=True, return_inverse=True)
    n_classes = int(inverse.max()) + 1
    sums = torch.zeros(n_classes, dtype=values.dtype, device=values.device)
    sums.index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=n_classes)
    per_class = sums / counts
    if return_per_class:
        return per_class.cpu().tolist()
    return torch.mean(per_class).item()
