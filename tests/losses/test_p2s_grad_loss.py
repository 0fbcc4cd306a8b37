"""P2SGradLoss: parity with PML (values, gradients w.r.t. embeddings and weight, SGD steps with
the per-call column projection), and errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import regularizers
from metricssl.losses.p2s_grad_loss import P2SGradLoss
from tests.classification_parity import check_bad_inputs, make_pair, sgd_parity, weight_loss_parity
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = P2SGradLoss, pml_losses.P2SGradLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = make_pair(Ours, Theirs, d, C, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(layout):
    ours, theirs = make_pair(Ours, Theirs, 16, 20, dtype=torch.float32)
    x = random_embeddings(48, 16, torch.float32, seed=3)
    weight_loss_parity(ours, theirs, x, make_labels(48, layout) % 20)


def test_parity_bfloat16_against_float32():
    ours, theirs = make_pair(Ours, Theirs, 16, 6, dtype=torch.float32)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16 and ours.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_stay_equal(dtype):
    # Each call re-projects the weight columns to unit length in place, in both libraries.
    ours, theirs = make_pair(Ours, Theirs, 8, 5, dtype=dtype)
    sgd_parity(ours, theirs, random_embeddings(30, 8, dtype, seed=6), random_labels(30, 5), lr=5)
    ours(random_embeddings(2, 8, dtype), torch.tensor([0, 1]))
    norms = torch.linalg.vector_norm(ours.weight.detach(), dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_initial_weight_has_unit_columns():
    torch.manual_seed(0)
    loss_fn = Ours(32, 10)
    assert loss_fn.weight.shape == (32, 10)
    norms = torch.linalg.vector_norm(loss_fn.weight.detach(), dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_embedding_regularizer():
    ours, theirs = make_pair(
        Ours,
        Theirs,
        8,
        5,
        embedding_regularizer=pml_regularizers.LpRegularizer(),
        ours_kwargs=dict(embedding_regularizer=regularizers.LpRegularizer()),
    )
    assert set(ours.reducer.reducers) == {"loss", "embedding_reg_loss"}
    weight_loss_parity(ours, theirs, random_embeddings(20, 8, torch.float64), random_labels(20, 5))


def test_defaults_and_attributes_match_pml():
    ours, theirs = make_pair(Ours, Theirs, 8, 5)
    assert (ours.descriptors_dim, ours.num_classes) == (theirs.descriptors_dim, theirs.num_classes)
    assert [name for name, _ in ours.named_parameters()] == ["weight"]
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize(
    "args, error, name",
    [
        ((0, 5), ValueError, "descriptors_dim"),
        ((8.0, 5), TypeError, "descriptors_dim"),
        ((8, 0), ValueError, "num_classes"),
        ((8, None), TypeError, "num_classes"),
    ],
)
def test_bad_arguments(args, error, name):
    with pytest.raises(error, match=name):
        Ours(*args)


def test_bad_inputs():
    loss_fn = Ours(4, 3)
    check_bad_inputs(loss_fn, embedding_size=4, num_classes=3, size_name="descriptors_dim")
    x, y = torch.randn(6, 4), torch.zeros(6, dtype=torch.long)
    a = torch.arange(3)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(x, y, (a, a, a))
