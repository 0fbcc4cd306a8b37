"""NPairsLoss: parity with PML in values and gradients, pair selection, errors and edge cases."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

from metricssl import distances, reducers
from metricssl.losses.n_pairs_loss import (
    NPairsLoss,
    first_pair_per_anchor_label,
    first_pair_per_class,
)
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(NPairsLoss(), pml_losses.NPairsLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(layout):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(NPairsLoss(), pml_losses.NPairsLoss(), x, make_labels(64, layout))


def test_parity_bfloat16_against_float32():
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        NPairsLoss(),
        pml_losses.NPairsLoss(),
        x,
        make_labels(48, "many"),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("seed", range(5))
def test_pairs_are_pmls(seed):
    labels = random_labels(40, 9, seed) * 7 - 20  # unsorted, negative and sparse label values
    a, p = first_pair_per_class(labels)
    ea, ep = pml_lmu.convert_to_pos_pairs_with_unique_labels(None, labels)
    assert torch.equal(a, ea) and torch.equal(p, ep)
    # with a tuple: the first pair in tuple order of each anchor label
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(seed))
    a1, p1, _, _ = pml_lmu.get_all_pairs_indices(labels)
    a1, p1 = a1[perm[: len(a1)] % len(a1)], p1[perm[: len(a1)] % len(a1)]
    t = (a1, p1, a1[:0], a1[:0])
    a, p = first_pair_per_anchor_label(a1, p1, labels)
    ea, ep = pml_lmu.convert_to_pos_pairs_with_unique_labels(t, labels)
    assert torch.equal(a, ea) and torch.equal(p, ep)
    _, first = np.unique(labels[a1].numpy(), return_index=True)
    assert torch.equal(a, a1[first])


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 6)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    loss_parity(NPairsLoss(), pml_losses.NPairsLoss(), x, labels, tuples)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (distances.CosineSimilarity(), pml_distances.CosineSimilarity()),
        (distances.LpDistance(), pml_distances.LpDistance()),
    ],
)
def test_distances(ours, theirs):
    x = random_embeddings(30, 8, torch.float64, seed=10)
    loss_parity(
        NPairsLoss(distance=ours),
        pml_losses.NPairsLoss(distance=theirs),
        x,
        make_labels(30, "many"),
    )


@pytest.mark.parametrize("name", ["SumReducer", "AvgNonZeroReducer"])
def test_reducers(name):
    x = random_embeddings(33, 8, torch.float64, seed=11)
    labels = random_labels(33, 10)
    loss_parity(
        NPairsLoss(reducer=getattr(reducers, name)()),
        pml_losses.NPairsLoss(reducer=getattr(pml_reducers, name)()),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 6)
    ours = NPairsLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.NPairsLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    assert torch.equal(ours["indices"], theirs["indices"])


def test_num_pairs_is_recorded():
    loss_fn = NPairsLoss(collect_stats=True)
    loss_fn(random_embeddings(10, 4), torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 5]))
    assert loss_fn.num_pairs == 3


@pytest.mark.parametrize("layout", ["singletons"])
def test_no_pairs_gives_zero_that_backpropagates(layout):
    x = random_embeddings(16, 8, requires_grad=True)
    loss = NPairsLoss()(x, make_labels(16, layout))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = torch.tensor([], dtype=torch.long)
    loss = NPairsLoss()(x, random_labels(16, 3), (empty, empty, empty))
    assert loss.item() == 0


def test_bad_arguments_and_inputs():
    with pytest.raises(TypeError):
        NPairsLoss(distance="dot")
    with pytest.raises(TypeError):
        NPairsLoss(reducer="mean")
    loss_fn = NPairsLoss()
    x = random_embeddings(8, 4)
    labels = make_labels(8, "three")
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, labels, ref_emb=random_embeddings(8, 4), ref_labels=labels)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, labels[:5])
