"""InstanceLoss: parity with PML in values and gradients, errors and edge cases."""

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.instance_loss import InstanceLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.mark.parametrize("n, d", [(1, 4), (2, 4), (9, 32), (40, 8), (96, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(InstanceLoss(), pml_losses.InstanceLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("gamma", [1, 16, 64, 128.5])
def test_parity_float32_and_gammas(layout, gamma):
    x = random_embeddings(48, 16, torch.float32, seed=3)
    loss_parity(
        InstanceLoss(gamma=gamma), pml_losses.InstanceLoss(gamma=gamma), x, make_labels(48, layout)
    )


@pytest.mark.parametrize("layout", ["singletons", "many"])
def test_parity_bfloat16_against_float32(layout):
    # gamma=64 multiplies the bfloat16 rounding of the similarities, hence the wider atol.
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        InstanceLoss(),
        pml_losses.InstanceLoss(),
        x,
        make_labels(40, layout),
        reference_dtype=torch.float32,
        atol=5e-2,
    )
    assert v.dtype == torch.bfloat16


def test_non_contiguous_label_values():
    # The target column is the rank of the label among the batch's distinct labels.
    x = random_embeddings(12, 8, torch.float64, seed=5)
    labels = torch.tensor([7, 3, 3, 100, 7, 42, 3, 100, 5, 5, 7, 42])
    loss_parity(InstanceLoss(gamma=8), pml_losses.InstanceLoss(gamma=8), x, labels)
    z = F.normalize(x, dim=1)
    target = torch.tensor([2, 0, 0, 4, 2, 3, 0, 4, 1, 1, 2, 3])  # ranks of 3, 5, 7, 42, 100
    expected = F.cross_entropy(8 * z @ z.T, target)
    torch.testing.assert_close(InstanceLoss(gamma=8)(x, labels), expected)


@pytest.mark.parametrize(
    "name, kwargs",
    [("SumReducer", {}), ("AvgNonZeroReducer", {}), ("ThresholdReducer", dict(low=1.0))],
)
def test_reducers(name, kwargs):
    x = random_embeddings(33, 8, torch.float64, seed=11)
    labels = random_labels(33, 10)
    loss_parity(
        InstanceLoss(reducer=getattr(reducers, name)(**kwargs)),
        pml_losses.InstanceLoss(reducer=getattr(pml_reducers, name)(**kwargs)),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 6)
    ours = InstanceLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.InstanceLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "element"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    assert torch.equal(ours["indices"], theirs["indices"])


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[1, 2] = float("inf")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(InstanceLoss()(x, make_labels(8, "three")))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(gamma=0), ValueError),
        (dict(gamma=-1), ValueError),
        (dict(gamma="64"), TypeError),
        (dict(distance=distances.LpDistance()), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        InstanceLoss(**kwargs)


def test_bad_inputs():
    loss_fn = InstanceLoss()
    x = random_embeddings(8, 4)
    labels = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(x, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, labels, ref_emb=random_embeddings(8, 4), ref_labels=labels)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    loss_fn(x, torch.zeros(8))  # float labels: compared by value, as in PML
