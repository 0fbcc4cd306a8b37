"""The k-NN vote: weighted and majority, ties to the smallest class."""

import torch

from metricssl.eval.knn_accuracy import knn_vote


def test_majority_vote_and_ties_to_smallest_class():
    codes = torch.tensor([[3, 1, 3, 1, 2], [5, 5, 4, 4, 6], [0, 0, 0, 0, 0]])
    assert knn_vote(codes, None, 0.1).tolist() == [1, 4, 0]


def test_weighted_vote_uses_exp_similarity_over_temperature():
    codes = torch.tensor([[1, 2, 2]])
    sims = torch.tensor([[0.9, 0.5, 0.5]])
    # exp(9) > 2 exp(5) at T=0.1; at T=10 the two votes for class 2 win.
    assert knn_vote(codes, sims, 0.1).tolist() == [1]
    assert knn_vote(codes, sims, 10.0).tolist() == [2]


def test_large_similarity_over_tiny_temperature_does_not_overflow():
    codes = torch.tensor([[4, 7]])
    sims = torch.tensor([[1.0, 0.99]])
    assert knn_vote(codes, sims, 1e-4).tolist() == [4]


def test_matches_dense_scatter_vote():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 6, (50, 9), generator=g)
    sims = torch.rand(50, 9, generator=g)
    dense = torch.zeros(50, 6).scatter_add_(1, codes, torch.exp(sims / 0.3))
    assert torch.equal(knn_vote(codes, sims, 0.3), dense.argmax(dim=1))
