"""Retrieval metrics from the ranks of the relevant neighbours, with PML's definitions.

For one query chunk the input is ``relevant``: a (queries, K) bool tensor, True where the
neighbour at that rank is relevant (same label), nearest first. :class:`RankedRelevance` holds
it with the two things every metric reads: the running count of relevant neighbours (int32,
one pass) and the rank of the first relevant one. Sums of precision@i are then one
matrix-vector product with ``1 / i``; nothing is sorted or listed per relevant neighbour.

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

from functools import cached_property

import torch


class RankedRelevance:
    """Relevance of each query's neighbours in rank order, and what the metrics derive from it.

    Args:
        relevant: (queries, K) bool, nearest neighbour first.
    """

    def __init__(self, relevant: torch.Tensor):
        self.relevant = relevant

    @cached_property
    def cumulative(self) -> torch.Tensor:
        """(queries, K) int32: relevant neighbours among the first i ranks."""
        return self.relevant.cumsum(dim=1, dtype=torch.int32)

    @cached_property
    def hits(self) -> torch.Tensor:
        """(queries, K) int32: at a relevant rank i, the relevant neighbours among the first i
        (precision@i times i); 0 elsewhere."""
        return torch.where(self.relevant, self.cumulative, 0)

    @cached_property
    def first(self) -> torch.Tensor:
        """(queries,) rank (1-based) of the first relevant neighbour, 0 if none."""
        rank = self.relevant.to(torch.uint8).argmax(dim=1) + 1  # argmax: the first maximum
        return rank.masked_fill_(~self.relevant.any(dim=1), 0)

    def ranks_up_to(self, limit: torch.Tensor) -> torch.Tensor:
        """(queries, 1) int64 column index of rank ``limit`` (at least rank 1)."""
        return (limit.clamp(min=1) - 1)[:, None].to(torch.int64)


def _sum_of_precisions(ranked: RankedRelevance, limit: torch.Tensor) -> torch.Tensor:
    """Per row: sum of precision@i over its relevant ranks i <= limit[row]."""
    # Only the ranks some row counts (MAP@R over a full ranking: the first max R of them).
    k = min(ranked.relevant.shape[1], int(limit.max())) if limit.numel() else 0
    hits = ranked.hits[:, :k]
    if bool((limit < k).any()):
        ranks = torch.arange(1, k + 1, device=limit.device)
        hits = hits.masked_fill(ranks[None, :] > limit[:, None], 0)
    inverse_ranks = 1.0 / torch.arange(1, k + 1, dtype=torch.float64, device=limit.device)
    return hits.to(torch.float64) @ inverse_ranks


def precision_at_1(ranked: RankedRelevance) -> torch.Tensor:
    return ranked.relevant[:, 0].to(torch.float64)


def r_precision(ranked: RankedRelevance, num_relevant: torch.Tensor, num_k: int) -> torch.Tensor:
    limit = num_relevant.clamp(max=num_k)
    hits = ranked.cumulative.gather(1, ranked.ranks_up_to(limit)).squeeze(1)
    # R = 0 (possible only with a custom label comparison) gives 0/0 = NaN, as in PML.
    return hits.masked_fill_(limit == 0, 0).to(torch.float64) / limit


def mean_average_precision_at_r(
    ranked: RankedRelevance, num_relevant: torch.Tensor, num_k: int
) -> torch.Tensor:
    return _sum_of_precisions(ranked, num_relevant.clamp(max=num_k)) / num_relevant


def mean_average_precision(
    ranked: RankedRelevance, num_relevant: torch.Tensor, num_k: int
) -> torch.Tensor:
    limit = torch.full_like(num_relevant, num_k)
    return _sum_of_precisions(ranked, limit) / num_relevant


def mean_reciprocal_rank(ranked: RankedRelevance, num_k: int) -> torch.Tensor:
    first = ranked.first
    found = (first > 0) & (first <= num_k)
    return torch.where(found, 1.0 / first.to(torch.float32), 0.0)


def recall_at_k(ranked: RankedRelevance, k: int) -> torch.Tensor:
    first = ranked.first
    return ((first > 0) & (first <= k)).to(torch.float64)


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
