"""CircleLoss: parity with PML in values and gradients, errors and edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.circle_loss import CircleLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(CircleLoss(), pml_losses.CircleLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("args", [{}, dict(m=0.25, gamma=256), dict(m=0.1, gamma=16)])
def test_parity_float32_and_arguments(layout, args):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(CircleLoss(**args), pml_losses.CircleLoss(**args), x, make_labels(64, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_bfloat16_against_float32(layout):
    # gamma=80 magnifies the bfloat16 rounding of the similarities (PML run in bfloat16 is
    # farther from its float32 self than this), hence the wider gradient tolerance.
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        CircleLoss(),
        pml_losses.CircleLoss(),
        x,
        make_labels(48, layout),
        reference_dtype=torch.float32,
        atol=5e-2,
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [5, 40, 70])
def test_ref_emb(n_ref):
    x = random_embeddings(40, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(40, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(
        CircleLoss(), pml_losses.CircleLoss(), x, labels, ref_emb=ref, ref_labels=ref_labels
    )


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    x = random_embeddings(64, 16, dtype, seed=8)
    labels = random_labels(64, 6)
    loss_parity(CircleLoss(), pml_losses.CircleLoss(), x, labels, miner(x, labels))


def test_indices_tuple_bfloat16():
    x = random_embeddings(48, 16, torch.bfloat16, seed=9)
    labels = random_labels(48, 5)
    tuples = pml_miners.TripletMarginMiner(margin=0.2)(x.float(), labels)
    loss_parity(
        CircleLoss(),
        pml_losses.CircleLoss(),
        x,
        labels,
        tuples,
        reference_dtype=torch.float32,
        atol=5e-2,
    )


@pytest.mark.parametrize("name", ["SumReducer", "MeanReducer"])
def test_custom_reducers(name):
    x = random_embeddings(33, 8, torch.float64, seed=10)
    labels = random_labels(33, 4)
    loss_parity(
        CircleLoss(reducer=getattr(reducers, name)()),
        pml_losses.CircleLoss(reducer=getattr(pml_reducers, name)()),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=11)
    labels = random_labels(20, 3)
    ours = CircleLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.CircleLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "element"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    torch.testing.assert_close(ours["indices"], theirs["indices"])


@pytest.mark.parametrize("labels", [torch.arange(12), torch.zeros(12, dtype=torch.long)])
def test_no_positive_or_no_negative_gives_zero_that_backpropagates(labels):
    x = random_embeddings(12, 8, requires_grad=True)
    loss = CircleLoss()(x, labels)
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_distance_must_be_cosine():
    with pytest.raises(TypeError, match="CosineSimilarity"):
        CircleLoss(distance=distances.LpDistance())
    with pytest.raises(TypeError, match="CosineSimilarity"):
        CircleLoss(distance=distances.DotProductSimilarity())
    # PML accepts the same subclasses we do.
    pml_losses.CircleLoss(distance=pml_distances.CosineSimilarity())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(gamma=0), ValueError),
        (dict(gamma=-80), ValueError),
        (dict(m="0.4"), TypeError),
        (dict(m=float("nan")), ValueError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        CircleLoss(**kwargs)


def test_bad_inputs():
    loss_fn = CircleLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    loss_fn(x, torch.zeros(8))  # float labels: compared by value, as in PML
