"""MultiSimilarityLoss: parity with PML in values and gradients, errors and edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.multi_similarity_loss import MultiSimilarityLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(MultiSimilarityLoss(), pml_losses.MultiSimilarityLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float32_and_arguments(layout):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    labels = make_labels(64, layout)
    args = dict(alpha=1.5, beta=20, base=0.3)
    loss_parity(MultiSimilarityLoss(**args), pml_losses.MultiSimilarityLoss(**args), x, labels)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    labels = make_labels(48, layout)
    ours, theirs = MultiSimilarityLoss(), pml_losses.MultiSimilarityLoss()
    v, _ = loss_parity(ours, theirs, x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


def test_lp_distance():
    # With a distance the roles of pos/neg margins flip; PML handles it through margin().
    x = random_embeddings(40, 8, torch.float64, seed=5)
    labels = make_labels(40, "three")
    args = dict(alpha=2, beta=10, base=1.0)
    loss_parity(
        MultiSimilarityLoss(distance=distances.LpDistance(), **args),
        pml_losses.MultiSimilarityLoss(distance=pml_distances.LpDistance(), **args),
        x,
        labels,
    )


@pytest.mark.parametrize("n_ref", [5, 40, 70])
def test_ref_emb(n_ref):
    x = random_embeddings(40, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(40, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(
        MultiSimilarityLoss(),
        pml_losses.MultiSimilarityLoss(),
        x,
        labels,
        ref_emb=ref,
        ref_labels=ref_labels,
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
    tuples = miner(x, labels)
    loss_parity(MultiSimilarityLoss(), pml_losses.MultiSimilarityLoss(), x, labels, tuples)


def test_indices_tuple_bfloat16():
    x = random_embeddings(48, 16, torch.bfloat16, seed=9)
    labels = random_labels(48, 5)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x.float(), labels)
    loss_parity(
        MultiSimilarityLoss(),
        pml_losses.MultiSimilarityLoss(),
        x,
        labels,
        tuples,
        reference_dtype=torch.float32,
    )


@pytest.mark.parametrize("name", ["SumReducer", "AvgNonZeroReducer", "ThresholdReducer"])
def test_custom_reducers(name):
    x = random_embeddings(33, 8, torch.float64, seed=10)
    labels = random_labels(33, 4)
    kw = dict(low=0.5) if name == "ThresholdReducer" else {}
    loss_parity(
        MultiSimilarityLoss(reducer=getattr(reducers, name)(**kw)),
        pml_losses.MultiSimilarityLoss(reducer=getattr(pml_reducers, name)(**kw)),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=11)
    labels = random_labels(20, 3)
    ours = MultiSimilarityLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.MultiSimilarityLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)
    theirs = theirs["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "element"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    torch.testing.assert_close(ours["indices"], theirs["indices"])


def test_empty_indices_tuple_gives_zero_that_backpropagates():
    x = random_embeddings(16, 8, requires_grad=True)
    empty = torch.tensor([], dtype=torch.long)
    loss = MultiSimilarityLoss()(x, random_labels(16, 3), (empty, empty, empty, empty))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_embedding_regularizer_is_added():
    from pytorch_metric_learning import regularizers as pml_regularizers

    from metricssl import regularizers

    x = random_embeddings(24, 8, torch.float64, seed=12)
    labels = random_labels(24, 3)
    loss_parity(
        MultiSimilarityLoss(embedding_regularizer=regularizers.LpRegularizer()),
        pml_losses.MultiSimilarityLoss(embedding_regularizer=pml_regularizers.LpRegularizer()),
        x,
        labels,
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(alpha=0), ValueError),
        (dict(alpha=-1), ValueError),
        (dict(beta=0), ValueError),
        (dict(alpha="2"), TypeError),
        (dict(base=None), TypeError),
        (dict(base=float("nan")), ValueError),
        (dict(distance="cosine"), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        MultiSimilarityLoss(**kwargs)


def test_bad_inputs():
    loss_fn = MultiSimilarityLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    with pytest.raises(ValueError):
        loss_fn(x[0], torch.zeros(8, dtype=torch.long))
