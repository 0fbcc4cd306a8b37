"""CenterInvariantRegularizer: PML's values and gradients, alone and as a weight regularizer."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl.distances import CosineSimilarity, LpDistance
from metricssl.reducers import SumReducer
from metricssl.regularizers.center_invariant_regularizer import CenterInvariantRegularizer
from tests.regularizers.regularizer_cases import (
    SHAPES,
    reg_parity,
    weight_regularizer_parity,
    weights,
)


@pytest.mark.parametrize("rows, dim", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity(rows, dim, dtype):
    w = weights(rows, dim, dtype, seed=rows) * torch.rand(rows, 1, dtype=dtype).add(0.5)
    reg_parity(CenterInvariantRegularizer(), pml_regularizers.CenterInvariantRegularizer(), w)
    reg_parity(
        CenterInvariantRegularizer(reducer=SumReducer()),
        pml_regularizers.CenterInvariantRegularizer(reducer=pml_reducers.SumReducer()),
        w,
    )


@pytest.mark.parametrize("p", [1, 3])
def test_other_norms(p):
    w = weights(9, 5, seed=p)
    reg_parity(
        CenterInvariantRegularizer(distance=LpDistance(p=p, power=1, normalize_embeddings=False)),
        pml_regularizers.CenterInvariantRegularizer(
            distance=pml_distances.LpDistance(p=p, power=1, normalize_embeddings=False)
        ),
        w,
    )


def test_bfloat16_against_pml_in_float32():
    w = weights(30, 16, torch.bfloat16, seed=2)
    reg_parity(
        CenterInvariantRegularizer(),
        pml_regularizers.CenterInvariantRegularizer(),
        w,
        reference_dtype=torch.float32,
    )


def test_known_value_and_equal_norms_cost_nothing():
    assert CenterInvariantRegularizer()(torch.tensor([[1.0, 0.0], [0.0, 3.0]])).item() == 4.0
    w = torch.tensor([[3.0, 4.0], [0.0, -5.0], [5.0, 0.0]], requires_grad=True)
    value = CenterInvariantRegularizer()(w)
    value.backward()
    assert value.item() == 0 and torch.count_nonzero(w.grad) == 0


def test_as_weight_regularizer():
    weight_regularizer_parity(
        CenterInvariantRegularizer(),
        pml_regularizers.CenterInvariantRegularizer(),
        num_classes=6,
        dim=4,
    )


@pytest.mark.parametrize(
    "distance, exc",
    [
        (CosineSimilarity(), TypeError),
        (LpDistance(), ValueError),  # normalizes
        (LpDistance(power=2, normalize_embeddings=False), ValueError),
    ],
)
def test_bad_distance(distance, exc):
    with pytest.raises(exc, match="distance"):
        CenterInvariantRegularizer(distance=distance)


def test_bad_input():
    with pytest.raises(ValueError, match="x"):
        CenterInvariantRegularizer()(torch.zeros(2, 3, 4))
