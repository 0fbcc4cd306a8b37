"""RegularFaceRegularizer: PML's values and gradients, chunked search, other similarities."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl.core import chunking
from metricssl.distances import BaseDistance, CosineSimilarity, DotProductSimilarity, LpDistance
from metricssl.reducers import SumReducer
from metricssl.regularizers.regular_face_regularizer import RegularFaceRegularizer
from tests.regularizers.regularizer_cases import (
    SHAPES,
    reg_parity,
    weight_regularizer_parity,
    weights,
)


@pytest.fixture
def tiny_budget():
    old = chunking.get_memory_budget()
    chunking.set_memory_budget(3 * 50 * 8)  # three rows of a 50-row float64 matrix per chunk
    yield
    chunking.set_memory_budget(old)


@pytest.mark.parametrize("rows, dim", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity(rows, dim, dtype):
    w = weights(rows, dim, dtype, seed=rows)
    reg_parity(RegularFaceRegularizer(), pml_regularizers.RegularFaceRegularizer(), w)
    reg_parity(
        RegularFaceRegularizer(reducer=SumReducer()),
        pml_regularizers.RegularFaceRegularizer(reducer=pml_reducers.SumReducer()),
        w,
    )


def test_chunked_search_matches_pml(tiny_budget):
    w = weights(50, 8, seed=11)
    reg = RegularFaceRegularizer()
    assert len(list(chunking.row_chunks(50, 50 * 8))) > 1
    reg_parity(reg, pml_regularizers.RegularFaceRegularizer(), w)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (DotProductSimilarity(normalize_embeddings=False), "dot"),
        (CosineSimilarity(power=2), "cos2"),
    ],
)
def test_other_similarities(ours, theirs):
    pml_distance = {
        "dot": pml_distances.DotProductSimilarity(normalize_embeddings=False),
        "cos2": pml_distances.CosineSimilarity(power=2),
    }[theirs]
    w = weights(12, 6, seed=4)
    reg_parity(
        RegularFaceRegularizer(distance=ours),
        pml_regularizers.RegularFaceRegularizer(distance=pml_distance),
        w,
    )


class MatrixOnlySimilarity(BaseDistance):
    """A user similarity with compute_mat only: the regularizer falls back to the matrix."""

    def __init__(self):
        super().__init__(normalize_embeddings=True, is_inverted=True)

    def compute_mat(self, query_emb, ref_emb):
        return query_emb @ ref_emb.t()


def test_distance_without_pairwise_distance():
    w = weights(10, 5, seed=6)
    reg_parity(
        RegularFaceRegularizer(distance=MatrixOnlySimilarity()),
        pml_regularizers.RegularFaceRegularizer(),
        w,
    )


def test_ties_pick_the_first_index_as_pml():
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    reg_parity(RegularFaceRegularizer(), pml_regularizers.RegularFaceRegularizer(), w)
    assert RegularFaceRegularizer().nearest_other_rows(w).tolist() == [1, 0, 1, 2]


def test_bfloat16_against_pml_in_float32():
    w = weights(8, 32, torch.bfloat16, seed=1)
    reg_parity(
        RegularFaceRegularizer(),
        pml_regularizers.RegularFaceRegularizer(),
        w,
        reference_dtype=torch.float32,
    )


def test_as_weight_regularizer():
    weight_regularizer_parity(
        RegularFaceRegularizer(), pml_regularizers.RegularFaceRegularizer(), num_classes=7, dim=5
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="distance"):
        RegularFaceRegularizer(distance=LpDistance())
    with pytest.raises(TypeError, match="distance"):
        RegularFaceRegularizer(distance="cosine")
    with pytest.raises(ValueError, match="x"):
        RegularFaceRegularizer()(torch.zeros(0, 3))
