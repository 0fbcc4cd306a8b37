"""BaseReducer: clear errors for malformed loss dictionaries, of the types PML raises."""

import pytest
import torch
from pytorch_metric_learning.reducers import MeanReducer as PMLMeanReducer

from metricssl.reducers.base_reducer import BaseReducer
from metricssl.reducers.mean_reducer import MeanReducer
from tests.reducers.reducer_inputs import loss_dict, make_inputs, make_losses


def test_one_entry_only():
    emb, labels = make_inputs()
    losses, idx = make_losses("element")
    d = {**loss_dict(losses, idx, "element"), **loss_dict(losses, idx, "element", name="b")}
    with pytest.raises(ValueError, match="MultipleReducers"):
        MeanReducer()(d, emb, labels)
    with pytest.raises(AssertionError):  # PML asserts: ours is both
        PMLMeanReducer()(d, emb, labels)
    with pytest.raises(AssertionError, match="MultipleReducers"):
        MeanReducer()(d, emb, labels)


def test_unknown_reduction_type():
    emb, labels = make_inputs()
    losses, idx = make_losses("element")
    with pytest.raises((ValueError, AttributeError), match="bogus"):
        MeanReducer()(loss_dict(losses, idx, "bogus"), emb, labels)


@pytest.mark.parametrize(
    "reduction_type, indices, exc",
    [
        ("element", torch.arange(5), ValueError),
        ("element", [0, 1], TypeError),
        ("pos_pair", (torch.arange(20),), ValueError),
        ("neg_pair", torch.arange(20), TypeError),
        ("pos_pair", (torch.arange(20), torch.arange(19)), ValueError),
        ("triplet", (torch.arange(20), torch.arange(20)), ValueError),
        ("triplet", (torch.arange(20), torch.arange(20), torch.arange(3)), ValueError),
    ],
)
def test_sizes_are_checked(reduction_type, indices, exc):
    emb, labels = make_inputs()
    losses = torch.rand(12 if reduction_type == "element" else 20)
    d = loss_dict(losses, indices, reduction_type)
    with pytest.raises(exc):
        MeanReducer()(d, emb, labels)
    with pytest.raises(AssertionError):  # PML asserts: ours is both
        PMLMeanReducer()(d, emb, labels)
    with pytest.raises(AssertionError):
        MeanReducer()(d, emb, labels)


def test_already_reduced_must_be_a_scalar():
    emb, labels = make_inputs()
    with pytest.raises(ValueError, match="scalar"):
        MeanReducer()(loss_dict(torch.rand(3), None, "already_reduced"), emb, labels)
    with pytest.raises(AssertionError, match="scalar"):
        MeanReducer()(loss_dict(torch.rand(3), None, "already_reduced"), emb, labels)
    one = torch.rand(1)
    assert MeanReducer()(loss_dict(one, None, "already_reduced"), emb, labels) is one


def test_base_class_needs_a_rule():
    emb, labels = make_inputs()
    losses, idx = make_losses("element")
    with pytest.raises(NotImplementedError):
        BaseReducer()(loss_dict(losses, idx, "element"), emb, labels)
    assert BaseReducer().fused() is None
