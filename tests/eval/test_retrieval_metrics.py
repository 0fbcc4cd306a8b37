"""Retrieval metrics of hand-made relevance lists, and the class averaging."""

import pytest
import torch

from metricssl.eval import retrieval_metrics as rm

# Three queries, ranks 1..6; True = relevant neighbour.
RELEVANT = torch.tensor(
    [
        [1, 0, 1, 0, 0, 1],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=torch.bool,
)
R = torch.tensor([3, 2, 2])


def test_ranked_relevance():
    ranked = rm.RankedRelevance(RELEVANT)
    assert ranked.cumulative.tolist() == [[1, 1, 2, 2, 2, 3], [0, 0, 0, 1, 2, 2], [0] * 6]
    assert ranked.first.tolist() == [1, 4, 0]


def test_metrics_by_hand():
    ranks = rm.RankedRelevance(RELEVANT)
    assert rm.precision_at_1(ranks).tolist() == [1.0, 0.0, 0.0]
    # first min(R, k) = 3, 2, 2 ranks hold 2, 0, 0 relevant
    assert rm.r_precision(ranks, R, 6).tolist() == [2 / 3, 0.0, 0.0]
    # MAP@R: query 0 -> (1/1 + 2/3) / 3
    assert rm.mean_average_precision_at_r(ranks, R, 6).tolist() == pytest.approx(
        [(1 + 2 / 3) / 3, 0.0, 0.0]
    )
    # MAP over 6 ranks: query 0 -> (1 + 2/3 + 3/6) / 3, query 1 -> (1/4 + 2/5) / 2
    assert rm.mean_average_precision(ranks, R, 6).tolist() == pytest.approx(
        [(1 + 2 / 3 + 0.5) / 3, (0.25 + 0.4) / 2, 0.0]
    )
    # only the first k=4 ranks count
    assert rm.mean_average_precision(ranks, R, 4).tolist() == pytest.approx(
        [(1 + 2 / 3) / 3, 0.25 / 2, 0.0]
    )
    assert rm.r_precision(ranks, R, 2).tolist() == [0.5, 0.0, 0.0]  # min(R, k) = 2
    mrr = rm.mean_reciprocal_rank(ranks, 6)
    assert mrr.dtype == torch.float32 and mrr.tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert rm.mean_reciprocal_rank(ranks, 3).tolist() == [1.0, 0.0, 0.0]
    assert rm.recall_at_k(ranks, 3).tolist() == [1.0, 0.0, 0.0]
    assert rm.recall_at_k(ranks, 4).tolist() == [1.0, 1.0, 0.0]


def test_relevant_ranks_answer_as_the_relevance_table():
    # The same three queries as ranks, padded with garbage past each row's count.
    ranks = torch.tensor([[1, 3, 6], [4, 5, 99], [7, 0, 0]])
    counts = torch.tensor([3, 2, 0])
    listed, table = rm.RelevantRanks(ranks, counts), rm.RankedRelevance(RELEVANT)
    assert listed.first.tolist() == table.first.tolist()
    for k in (1, 2, 4, 6):
        limit = torch.full((3,), k)
        assert listed.count_up_to(limit).tolist() == table.count_up_to(limit).tolist()
        assert listed.sum_of_precisions(limit).tolist() == pytest.approx(
            table.sum_of_precisions(limit).tolist()
        )
        assert rm.mean_average_precision(listed, R, k).tolist() == pytest.approx(
            rm.mean_average_precision(table, R, k).tolist()
        )
    assert rm.precision_at_1(listed).tolist() == [1.0, 0.0, 0.0]
    assert rm.mean_reciprocal_rank(listed, 6).tolist() == pytest.approx([1.0, 0.25, 0.0])


def test_zero_relevant_gives_nan_like_pml():
    ranks = rm.RankedRelevance(torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isnan(rm.r_precision(ranks, torch.tensor([0]), 3)).all()
    assert torch.isnan(rm.mean_average_precision_at_r(ranks, torch.tensor([0]), 3)).all()


def test_average():
    values = torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=torch.float64)
    classes = torch.tensor([2, 2, 0, 7])
    assert rm.average(values, classes) == 0.5
    assert rm.average(values, classes, return_per_class=True) == [0.5, 0.5, 0.5]
    assert (
        rm.average(
            torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
            torch.tensor([0, 0, 1]),
            avg_of_avgs=True,
        )
        == 0.5
    )
