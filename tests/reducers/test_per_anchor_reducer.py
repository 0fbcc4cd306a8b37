"""PerAnchorReducer against PML's."""

import pytest
import torch
from pytorch_metric_learning import reducers as pml_reducers

from metricssl.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from metricssl.reducers.per_anchor_reducer import PerAnchorReducer
from metricssl.reducers.sum_reducer import SumReducer
from tests.reducers.reducer_inputs import N, loss_dict, make_inputs


def unique_pairs(size, seed):
    """Distinct (anchor, other) pairs: with repeats, which value a scatter keeps is unspecified."""
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(N * N, generator=g)[:size]
    losses = torch.rand(size, generator=g, dtype=torch.float64)
    losses[::4] = 0
    return losses, (flat // N, flat % N)


def max_per_row(x, num_per_row):
    return x.max(dim=1).values


@pytest.mark.parametrize(
    "inner",
    [
        (None, None),
        (SumReducer, pml_reducers.SumReducer),
        (AvgNonZeroReducer, pml_reducers.AvgNonZeroReducer),
    ],
)
@pytest.mark.parametrize("reduction_type", ["pos_pair", "neg_pair"])
@pytest.mark.parametrize("size", [5, 40])
def test_pairs_match_pml(inner, reduction_type, size):
    emb, labels = make_inputs()
    ours = PerAnchorReducer(reducer=inner[0]() if inner[0] else None)
    theirs = pml_reducers.PerAnchorReducer(reducer=inner[1]() if inner[1] else None)
    losses, idx = unique_pairs(size, seed=size)
    l1, l2 = losses.clone().requires_grad_(), losses.clone().requires_grad_()
    v1 = ours(loss_dict(l1, idx, reduction_type), emb, labels)
    v2 = theirs(loss_dict(l2, idx, reduction_type), emb, labels)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(torch.autograd.grad(v1, l1)[0], torch.autograd.grad(v2, l2)[0])


def test_element_losses_go_straight_to_the_inner_reducer():
    emb, labels = make_inputs()
    losses = torch.rand(N, dtype=torch.float64)
    for ours, theirs in [
        (PerAnchorReducer(), pml_reducers.PerAnchorReducer()),
        (PerAnchorReducer(SumReducer()), pml_reducers.PerAnchorReducer(pml_reducers.SumReducer())),
    ]:
        d = loss_dict(losses, torch.arange(N), "element")
        torch.testing.assert_close(ours(d, emb, labels), theirs(d, emb, labels))


def test_custom_aggregation_func():
    emb, labels = make_inputs()
    losses, idx = unique_pairs(30, seed=1)
    ours = PerAnchorReducer(aggregation_func=max_per_row)
    theirs = pml_reducers.PerAnchorReducer(aggregation_func=max_per_row)
    d = loss_dict(losses, idx, "pos_pair")
    torch.testing.assert_close(ours(d, emb, labels), theirs(d, emb, labels))


def test_known_value():
    # anchor 0: pairs 1.0 and 3.0 -> 2.0; anchor 1: one pair 4.0; the other anchors: 0
    emb, labels = make_inputs()
    losses = torch.tensor([1.0, 3.0, 4.0], dtype=torch.float64)
    idx = (torch.tensor([0, 0, 1]), torch.tensor([2, 3, 0]))
    out = PerAnchorReducer()(loss_dict(losses, idx, "pos_pair"), emb, labels)
    torch.testing.assert_close(out, torch.tensor(6.0 / N, dtype=torch.float64))


def test_triplets_are_not_supported():
    emb, labels = make_inputs()
    losses = torch.rand(3, dtype=torch.float64)
    idx = (torch.tensor([0, 1, 2]),) * 3
    with pytest.raises(NotImplementedError, match="triplet"):
        PerAnchorReducer()(loss_dict(losses, idx, "triplet"), emb, labels)
