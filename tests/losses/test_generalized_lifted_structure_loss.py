"""GeneralizedLiftedStructureLoss: parity with PML in values and gradients, errors, edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.generalized_lifted_structure_loss import GeneralizedLiftedStructureLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

Ours, Theirs = GeneralizedLiftedStructureLoss, pml_losses.GeneralizedLiftedStructureLoss


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(Ours(), Theirs(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("args", [{}, dict(neg_margin=0.5, pos_margin=0.2)])
def test_parity_float32_and_arguments(layout, args):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(Ours(**args), Theirs(**args), x, make_labels(64, layout))


def test_cosine_similarity():
    x = random_embeddings(40, 8, torch.float64, seed=5)
    args = dict(neg_margin=0.3, pos_margin=0.8)
    loss_parity(
        Ours(distance=distances.CosineSimilarity(), **args),
        Theirs(distance=pml_distances.CosineSimilarity(), **args),
        x,
        make_labels(40, "three"),
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    ours, theirs = (
        Ours(distance=distances.CosineSimilarity()),
        Theirs(distance=pml_distances.CosineSimilarity()),
    )
    labels = make_labels(48, layout)
    v, _ = loss_parity(ours, theirs, x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [5, 40, 70])
def test_ref_emb(n_ref):
    x = random_embeddings(40, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(40, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(Ours(), Theirs(), x, labels, ref_emb=ref, ref_labels=ref_labels)


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
    loss_parity(Ours(), Theirs(), x, labels, miner(x, labels))


@pytest.mark.parametrize("name", ["SumReducer", "AvgNonZeroReducer"])
def test_custom_reducers(name):
    x = random_embeddings(33, 8, torch.float64, seed=10)
    labels = random_labels(33, 4)
    loss_parity(
        Ours(reducer=getattr(reducers, name)()),
        Theirs(reducer=getattr(pml_reducers, name)()),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=11)
    labels = random_labels(20, 3)
    ours = Ours(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = Theirs(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "element"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    torch.testing.assert_close(ours["indices"], theirs["indices"])


def test_empty_indices_tuple_gives_zero_that_backpropagates():
    x = random_embeddings(16, 8, requires_grad=True)
    empty = torch.tensor([], dtype=torch.long)
    loss = Ours()(x, random_labels(16, 3), (empty, empty, empty))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_loss_is_zero_when_margins_are_met():
    # Two tight, opposite clusters on the unit circle: log-sum-exps of (d_pos - 0.5) and of
    # (1 - d_neg) = (1 - 2) add to a negative number, so the relu is zero everywhere.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]], requires_grad=True)
    loss = Ours(neg_margin=1, pos_margin=0.5)(x, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(neg_margin="1"), TypeError),
        (dict(pos_margin=None), TypeError),
        (dict(neg_margin=float("nan")), ValueError),
        (dict(distance=object()), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Ours(**kwargs)


def test_bad_inputs():
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        Ours()(x)
    with pytest.raises(ValueError, match="ref_labels"):
        Ours()(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))


def test_importable_from_pmls_module_path():
    """PML defines it in losses/lifted_structure_loss.py; that path works here too."""
    from metricssl.losses import GeneralizedLiftedStructureLoss
    from metricssl.losses.lifted_structure_loss import GeneralizedLiftedStructureLoss as same

    assert same is GeneralizedLiftedStructureLoss
