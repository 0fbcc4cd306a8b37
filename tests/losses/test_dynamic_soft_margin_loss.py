"""DynamicSoftMarginLoss: parity with PML (values, gradients, histogram), errors, edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import regularizers as pml_regularizers
from pytorch_metric_learning.losses import dynamic_soft_margin_loss as pml_dsm

from metricssl import distances, reducers, regularizers
from metricssl.core import chunking
from metricssl.losses.dynamic_soft_margin_loss import (
    DynamicSoftMarginLoss,
    find_hard_negatives,
)
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


class _PMLDistanceWithoutInplace(pml_distances.LpDistance):
    """PML's label-free path writes into the distance matrix in place, which breaks its own
    backward (cdist needs its output). Handing it a copy gives PML's intended gradient."""

    def compute_mat(self, query_emb, ref_emb):
        return super().compute_mat(query_emb, ref_emb).clone()


def pml_loss(**kwargs):
    return pml_losses.DynamicSoftMarginLoss(distance=_PMLDistanceWithoutInplace(), **kwargs)


@pytest.mark.parametrize("n, d", [(2, 4), (9, 32), (40, 8), (64, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64_with_labels(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(DynamicSoftMarginLoss(), pml_loss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize(
    "kwargs", [{}, dict(min_val=-3.0, num_bins=7), dict(min_val=-1.5, num_bins=30)]
)
def test_parity_float32_and_arguments(layout, kwargs):
    x = random_embeddings(48, 16, torch.float32, seed=3)
    loss_parity(DynamicSoftMarginLoss(**kwargs), pml_loss(**kwargs), x, make_labels(48, layout))


@pytest.mark.parametrize("n, m", [(1, 3), (3, 1), (16, 16), (30, 24), (24, 30)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_without_labels(n, m, dtype):
    # Row-aligned (anchor, positive) descriptor pairs, hardest negative in row or column.
    x = random_embeddings(n, 8, dtype, seed=n)
    ref = 0.3 * random_embeddings(m, 8, dtype, seed=m + 1)
    ref[: min(n, m)] += x[: min(n, m)]
    loss_parity(DynamicSoftMarginLoss(), pml_loss(), x, None, ref_emb=ref)


def test_single_pair_without_negative_gives_zero():
    x = random_embeddings(1, 8, requires_grad=True)
    loss = DynamicSoftMarginLoss()(x, None, ref_emb=random_embeddings(1, 8))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        DynamicSoftMarginLoss(),
        pml_loss(),
        x,
        make_labels(40, layout),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [3, 25, 40])
def test_ref_emb_with_labels(n_ref):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(DynamicSoftMarginLoss(), pml_loss(), x, labels, ref_emb=ref, ref_labels=ref_labels)


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    x = random_embeddings(32, 16, dtype, seed=8)
    labels = random_labels(32, 4)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    loss_parity(DynamicSoftMarginLoss(), pml_loss(), x, labels, tuples)


@pytest.mark.parametrize("labelled", [True, False])
def test_histogram_over_several_calls(labelled):
    # PML keeps the autograd graph inside hist_, so its second backward fails; detaching it
    # between calls (as we do) gives the gradient PML means.
    ours, theirs = DynamicSoftMarginLoss(momentum=0.3), pml_loss(momentum=0.3)
    for step in range(4):
        x = random_embeddings(24, 8, torch.float64, seed=step)
        labels = random_labels(24, 3, step) if labelled else None
        ref = None if labelled else x + 0.5 * random_embeddings(24, 8, torch.float64, seed=9)
        theirs.hist_ = theirs.hist_.detach()
        loss_parity(ours, theirs, x, labels, ref_emb=ref)
        torch.testing.assert_close(ours.hist_, theirs.hist_.detach())
        assert not ours.hist_.requires_grad
        assert ours.hist_.sum().item() == pytest.approx(1.0)


def test_training_loop_backward_twice():
    loss_fn = DynamicSoftMarginLoss()
    x = random_embeddings(16, 8, requires_grad=True)
    labels = random_labels(16, 3)
    for _ in range(3):
        loss_fn(x, labels).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("labelled", [True, False])
def test_blocks_within_a_small_budget(labelled):
    x = random_embeddings(30, 8, torch.float64, seed=10)
    labels = make_labels(30, "three") if labelled else None
    ref = None if labelled else x + 0.5 * random_embeddings(30, 8, torch.float64, seed=11)
    before = chunking.get_memory_budget()
    try:
        chunking.set_memory_budget(2048)
        loss_parity(DynamicSoftMarginLoss(), pml_loss(), x, labels, ref_emb=ref)
    finally:
        chunking.set_memory_budget(before)


def test_top_bin_is_clamped_where_pml_fails():
    # Far-apart positives and a close negative put x in the top bin: PML indexes past the
    # histogram's end; here the value lands in the last bin and the loss is finite.
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.01], [0.99, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    with pytest.raises(RuntimeError):
        pml_losses.DynamicSoftMarginLoss()(x, labels)
    ours = DynamicSoftMarginLoss()
    loss = ours(x.requires_grad_(), labels)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert ours.hist_[-1] > 0


def test_find_hard_negatives_matches_pml():
    d = torch.rand(6, 6, dtype=torch.float64)
    pos, neg = find_hard_negatives(d)
    pml_pos, pml_neg = pml_dsm.find_hard_negatives(d.clone())
    torch.testing.assert_close(pos, pml_pos)
    torch.testing.assert_close(neg, pml_neg)


def test_embedding_regularizer_and_reducer_pass_through():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 3)
    ours = DynamicSoftMarginLoss(
        embedding_regularizer=regularizers.LpRegularizer(), reducer=reducers.SumReducer()
    )
    theirs = pml_losses.DynamicSoftMarginLoss(
        embedding_regularizer=pml_regularizers.LpRegularizer(),
        distance=_PMLDistanceWithoutInplace(),
    )
    loss_parity(ours, theirs, x, labels)


@pytest.mark.parametrize("layout", ["singletons", "one_class"])
def test_no_triplets_gives_zero_that_backpropagates(layout):
    loss_fn = DynamicSoftMarginLoss()
    x = random_embeddings(16, 8, requires_grad=True)
    loss = loss_fn(x, make_labels(16, layout))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert loss_fn.hist_.sum() == 0  # nothing was binned


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[1, 2] = float("inf")
    loss_fn = DynamicSoftMarginLoss()
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(loss_fn(x, make_labels(8, "three")))
    assert torch.equal(loss_fn.hist_, torch.zeros(10))  # the histogram is not poisoned


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(min_val=0.0), ValueError),
        (dict(min_val=1.0), ValueError),
        (dict(min_val="-2"), TypeError),
        (dict(num_bins=0), ValueError),
        (dict(num_bins=2.5), TypeError),
        (dict(momentum=-0.1), ValueError),
        (dict(momentum=1.5), ValueError),
        (dict(distance=distances.CosineSimilarity()), TypeError),
        (dict(distance=distances.LpDistance(p=1)), ValueError),
        (dict(distance=distances.LpDistance(normalize_embeddings=False)), ValueError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        DynamicSoftMarginLoss(**kwargs)


def test_bad_inputs():
    loss_fn = DynamicSoftMarginLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    loss_fn(x, torch.zeros(8))  # float labels: compared by value, as in PML
    with pytest.raises(ValueError, match="embedding size"):
        loss_fn(x, ref_emb=random_embeddings(8, 5))
