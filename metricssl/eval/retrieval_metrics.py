"""Retrieval metrics from the ranks of the relevant neighbours, with PML's definitions.

A query chunk's relevance comes in one of two forms, which answer the same three questions
(the rank of the first relevant neighbour, how many relevant ranks lie within a limit, and
the sum of precision@i over them); every metric below is written once, on those:

- :class:`RankedRelevance`: a (queries, K) bool tensor, True where the neighbour at that rank
  is relevant (same label), nearest first: what a k-NN table gives;
- :class:`RelevantRanks`: the ranks of each query's relevant references, ascending: what a
  full ranking gives without listing its neighbours (:func:`metricssl.eval.knn.group_ranks`).

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

precision@i is (relevant among the first i) / i: at the j-th relevant rank r_j it is j / r_j.
Values are float64 except the reciprocal rank, which PML computes in float32 (kept, so that
its averages agree with PML's to the last bit). :func:`average` averages over queries, or per
class first (``avg_of_avgs``), or returns the per-class list, as PML's
``maybe_get_avg_of_avgs``.
"""

from __future__ import annotations

from functools import cached_property

import torch


class RankedRelevance:
    """Relevance of each query's neighbours in rank order.

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
    def first(self) -> torch.Tensor:
        """(queries,) rank (1-based) of the first relevant neighbour, 0 if none."""
        rank = self.relevant.to(torch.uint8).argmax(dim=1) + 1  # argmax: the first maximum
        return rank.masked_fill_(~self.relevant.any(dim=1), 0)

    def count_up_to(self, limit: torch.Tensor) -> torch.Tensor:
        """(queries,) relevant neighbours among the first ``limit`` ranks (limit >= 1)."""
        column = (limit.clamp(min=1) - 1)[:, None].to(torch.int64)
        return self.cumulative.gather(1, column).squeeze(1)

    def sum_of_precisions(self, limit: torch.Tensor) -> torch.Tensor:
        """(queries,) float64 sum of precision@i over the relevant ranks i <= limit."""
        # Only the ranks some row counts (MAP@R over a full ranking: the first max R of them).
        k = min(self.relevant.shape[1], int(limit.max())) if limit.numel() else 0
        # At a relevant rank i: the relevant neighbours among the first i (precision@i x i).
        hits = torch.where(self.relevant[:, :k], self.cumulative[:, :k], 0)
        if bool((limit < k).any()):
            ranks = torch.arange(1, k + 1, device=limit.device)
            hits = hits.masked_fill(ranks[None, :] > limit[:, None], 0)
        inverse_ranks = 1.0 / torch.arange(1, k + 1, dtype=torch.float64, device=limit.device)
        return hits.to(torch.float64) @ inverse_ranks


class RelevantRanks:
    """The ranks of each query's relevant references in its ranking.

    Args:
        ranks: (queries, m) int64, 1-based, ascending in each row; entries past ``counts``
            are ignored.
        counts: (queries,) number of ranks listed per row.
    """

    def __init__(self, ranks: torch.Tensor, counts: torch.Tensor):
        listed = torch.arange(ranks.shape[1], device=ranks.device)[None, :] < counts[:, None]
        # Unlisted slots get a rank past every limit, so no count or sum includes them.
        self.ranks = ranks.masked_fill(~listed, torch.iinfo(torch.int64).max)
        self.counts = counts

    @cached_property
    def first(self) -> torch.Tensor:
        """(queries,) rank of the first relevant reference, 0 if none."""
        if self.ranks.shape[1] == 0:
            return torch.zeros_like(self.counts)
        return torch.where(self.counts > 0, self.ranks[:, 0], 0)

    def count_up_to(self, limit: torch.Tensor) -> torch.Tensor:
        return (self.ranks <= limit[:, None]).sum(dim=1)

    def sum_of_precisions(self, limit: torch.Tensor) -> torch.Tensor:
        within = self.ranks <= limit[:, None]
        place = torch.arange(1, self.ranks.shape[1] + 1, dtype=torch.float64)
        # The j-th relevant rank r_j contributes precision j / r_j, as j * (1 / r_j): the same
        # float64 products as RankedRelevance's hits @ (1 / i).
        inverse = 1.0 / torch.where(within, self.ranks, 1).to(torch.float64)
        return (place.to(limit.device)[None, :] * inverse).masked_fill_(~within, 0).sum(dim=1)


Relevance = RankedRelevance | RelevantRanks


def precision_at_1(ranked: Relevance) -> torch.Tensor:
    return (ranked.first == 1).to(torch.float64)


def r_precision(ranked: Relevance, num_relevant: torch.Tensor, num_k: int) -> torch.Tensor:
    limit = num_relevant.clamp(max=num_k)
    hits = ranked.count_up_to(limit)
    # R = 0 (possible only with a custom label comparison) gives 0/0 = NaN, as in PML.
    return hits.masked_fill_(limit == 0, 0).to(torch.float64) / limit


def mean_average_precision_at_r(
    ranked: Relevance, num_relevant: torch.Tensor, num_k: int
) -> torch.Tensor:
    return ranked.sum_of_precisions(num_relevant.clamp(max=num_k)) / num_relevant


def mean_average_precision(
    ranked: Relevance, num_relevant: torch.Tensor, num_k: int
) -> torch.Tensor:
    return ranked.sum_of_precisions(torch.full_like(num_relevant, num_k)) / num_relevant


def mean_reciprocal_rank(ranked: Relevance, num_k: int) -> torch.Tensor:
    first = ranked.first
    found = (first > 0) & (first <= num_k)
    return torch.where(found, 1.0 / first.to(torch.float32), 0.0)


def recall_at_k(ranked: Relevance, k: int) -> torch.Tensor:
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
