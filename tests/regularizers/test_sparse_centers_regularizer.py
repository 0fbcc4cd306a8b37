"""SparseCentersRegularizer: PML's values, gradients and statistics, block-wise."""

import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl.core import chunking
from metricssl.distances import CosineSimilarity, DotProductSimilarity
from metricssl.reducers import MeanReducer
from metricssl.regularizers.sparse_centers_regularizer import SparseCentersRegularizer
from tests.regularizers.regularizer_cases import reg_parity, weight_regularizer_parity, weights


def pair(num_classes, centers, **kwargs):
    return (
        SparseCentersRegularizer(num_classes, centers, **kwargs),
        pml_regularizers.SparseCentersRegularizer(num_classes, centers, **kwargs),
    )


@pytest.mark.parametrize("num_classes, centers", [(1, 2), (3, 2), (4, 5), (20, 3)])
@pytest.mark.parametrize("dim", [3, 16])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity(num_classes, centers, dim, dtype):
    w = weights(num_classes * centers, dim, dtype, seed=num_classes + dim)
    reg_parity(*pair(num_classes, centers), w)


def test_other_reducer_and_power():
    w = weights(12, 6, seed=3)
    reg_parity(
        SparseCentersRegularizer(4, 3, reducer=MeanReducer()),
        pml_regularizers.SparseCentersRegularizer(4, 3, reducer=pml_reducers.MeanReducer()),
        w,
    )
    reg_parity(
        SparseCentersRegularizer(4, 3, distance=CosineSimilarity(power=3)),
        pml_regularizers.SparseCentersRegularizer(
            4, 3, distance=pml_distances.CosineSimilarity(power=3)
        ),
        w,
    )


def test_bfloat16_against_pml_in_float32():
    w = weights(24, 32, torch.bfloat16, seed=1)
    reg_parity(*pair(8, 3), w, reference_dtype=torch.float32)


def test_identical_centers_cost_nothing_and_opposite_ones_the_most():
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
    assert SparseCentersRegularizer(1, 2)(same).item() == pytest.approx(0.0, abs=1e-3)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # sqrt(2 - 2 * -1) = 2 for the single pair, divided by twice the number of pairs.
    assert SparseCentersRegularizer(1, 2)(opposite).item() == pytest.approx(1.0)


@pytest.mark.parametrize("num_classes", [1, 5])
def test_stats_match_pml(num_classes):
    ours, theirs = pair(num_classes, 3, collect_stats=True)
    w = weights(num_classes * 3, 8, seed=num_classes)
    reg_parity(ours, theirs, w)
    assert ours.same_class_center_sim == pytest.approx(theirs.same_class_center_sim, rel=1e-6)
    if num_classes == 1:  # no pair of different classes
        assert math.isnan(ours.diff_class_center_sim) and math.isnan(theirs.diff_class_center_sim)
    else:
        assert ours.diff_class_center_sim == pytest.approx(theirs.diff_class_center_sim, rel=1e-6)


def test_stats_with_chunks():
    old = chunking.get_memory_budget()
    chunking.set_memory_budget(40 * 8 * 3)
    try:
        ours, theirs = pair(10, 4, collect_stats=True)
        reg_parity(ours, theirs, weights(40, 8, seed=9))
    finally:
        chunking.set_memory_budget(old)
    assert ours.diff_class_center_sim == pytest.approx(theirs.diff_class_center_sim, rel=1e-6)


def test_as_weight_regularizer():
    # 6 weight rows: 3 classes of 2 centres each, class-major.
    weight_regularizer_parity(*pair(3, 2), num_classes=6, dim=5)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(num_classes=0, centers_per_class=2), ValueError, "num_classes"),
        (dict(num_classes=2.0, centers_per_class=2), TypeError, "num_classes"),
        (dict(num_classes=2, centers_per_class=1), ValueError, "centers_per_class"),
        (dict(num_classes=2, centers_per_class=None), TypeError, "centers_per_class"),
        (
            dict(num_classes=2, centers_per_class=2, distance=DotProductSimilarity()),
            TypeError,
            "distance",
        ),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SparseCentersRegularizer(**kwargs)


def test_wrong_number_of_rows():
    with pytest.raises(ValueError, match="num_classes \\* centers_per_class"):
        SparseCentersRegularizer(3, 2)(torch.randn(7, 4))
