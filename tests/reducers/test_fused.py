"""FusedReduction: a reducer's rule applied chunk by chunk gives the reducer's own value."""

import pytest
import torch

from metricssl.reducers.avg_non_zero_reducer import AvgNonZeroReducer
from metricssl.reducers.base_reducer import BaseReducer
from metricssl.reducers.fused import FusedReduction
from metricssl.reducers.mean_reducer import MeanReducer
from metricssl.reducers.multiple_reducers import MultipleReducers
from metricssl.reducers.sum_reducer import SumReducer
from metricssl.reducers.threshold_reducer import ThresholdReducer
from tests.reducers.reducer_inputs import loss_dict, make_inputs

FUSABLE = [
    MeanReducer,
    SumReducer,
    AvgNonZeroReducer,
    lambda: ThresholdReducer(low=0.3),
    lambda: ThresholdReducer(high=0.7),
    lambda: ThresholdReducer(low=0.2, high=0.9),
]


def losses_2d(seed=0, dtype=torch.float64):
    """A (rows, cols) block of losses, as a loss would compute it, with zeros and negatives."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(9, 7, generator=g, dtype=dtype) * 1.2 - 0.1
    x[x < 0.15] = 0
    return x


def accumulate(fused, losses, valid, chunk_rows):
    total = count = 0
    for s in range(0, losses.shape[0], chunk_rows):
        t, c = fused.partial(losses[s : s + chunk_rows], valid[s : s + chunk_rows])
        total, count = total + t, count + c
    return total, count


@pytest.mark.parametrize("make_reducer", FUSABLE)
@pytest.mark.parametrize("chunk_rows", [1, 4, 9])
@pytest.mark.parametrize("valid_kind", ["all", "some", "none"])
def test_chunked_partial_and_finish_equal_the_reducer(make_reducer, chunk_rows, valid_kind):
    emb, labels = make_inputs()
    reducer = make_reducer()
    fused = reducer.fused()
    assert isinstance(fused, FusedReduction)
    g = torch.Generator().manual_seed(1)
    valid = {
        "all": torch.ones(9, 7, dtype=torch.bool),
        "some": torch.rand(9, 7, generator=g) < 0.6,
        "none": torch.zeros(9, 7, dtype=torch.bool),
    }[valid_kind]
    l1 = losses_2d().requires_grad_(True)
    l2 = l1.detach().clone().requires_grad_(True)

    total, count = accumulate(fused, l1, valid, chunk_rows)
    v1 = fused.finish(total, count, emb)
    kept = l2[valid]
    if len(kept):
        v2 = reducer(loss_dict(kept, torch.arange(len(kept)), "element"), emb, labels)
    else:
        v2 = reducer(loss_dict(0, None, "already_reduced"), emb, labels)
    torch.testing.assert_close(v1, v2)
    assert v1.dtype == emb.dtype
    if v2.requires_grad and kept.numel():
        g1 = torch.autograd.grad(v1, l1, allow_unused=True)[0]
        g2 = torch.autograd.grad(v2, l2, allow_unused=True)[0]
        g1 = torch.zeros_like(l1) if g1 is None else g1
        g2 = torch.zeros_like(l2) if g2 is None else g2
        torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("make_reducer", FUSABLE)
def test_without_a_valid_mask(make_reducer):
    emb, labels = make_inputs()
    reducer = make_reducer()
    losses = losses_2d(seed=3)
    total, count = reducer.fused().partial(losses)
    flat = losses.flatten()
    expected = reducer(loss_dict(flat, torch.arange(len(flat)), "element"), emb, labels)
    torch.testing.assert_close(reducer.fused().finish(total, count, emb), expected)


def test_nothing_kept_is_a_zero_that_backpropagates():
    emb, _ = make_inputs()
    for fused in [FusedReduction(low=5.0), FusedReduction(mean=False, high=-1.0)]:
        total, count = fused.partial(losses_2d())
        out = fused.finish(total, count, emb)
        assert out.item() == 0
        (g,) = torch.autograd.grad(out, emb)
        assert torch.equal(g, torch.zeros_like(emb))


def test_loss_entry_is_an_already_reduced_entry_reducers_accept():
    emb, labels = make_inputs()
    reducer = AvgNonZeroReducer()
    fused = reducer.fused()
    losses = losses_2d(seed=4)
    entry = fused.loss_entry(*fused.partial(losses), emb)
    assert entry["reduction_type"] == "already_reduced" and entry["losses"].ndim == 0
    expected = losses[losses > 0].mean()
    torch.testing.assert_close(reducer({"loss": entry}, emb, labels), expected)
    both = MultipleReducers({"loss": reducer})({"loss": entry, "other": entry}, emb, labels)
    torch.testing.assert_close(both, 2 * expected)


def test_half_losses_finish_in_the_embeddings_dtype():
    emb, _ = make_inputs(dtype=torch.bfloat16)
    fused = MeanReducer().fused()
    losses = losses_2d().to(torch.bfloat16)
    total, count = fused.partial(losses.float())
    out = fused.finish(total, count, emb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), losses.float().mean(), rtol=1e-2, atol=1e-2)


def test_user_subclasses_are_not_fused_unless_they_opt_in():
    class MyMean(MeanReducer):
        def element_reduction(self, losses, *args):
            return losses.median()

    class MyThreshold(ThresholdReducer):
        pass

    class MyAvgNonZero(AvgNonZeroReducer):
        pass

    class OptIn(SumReducer):
        fusable = True

    assert MyMean().fused() is None
    assert MyThreshold(low=0).fused() is None
    assert MyAvgNonZero().fused() is None
    assert OptIn().fused() == FusedReduction(mean=False)
    assert BaseReducer().fused() is None

    class OptInWithoutRule(BaseReducer):
        fusable = True

    with pytest.raises(NotImplementedError):
        OptInWithoutRule().fused()
