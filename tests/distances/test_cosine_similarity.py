"""CosineSimilarity against PML's."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl.distances.cosine_similarity import CosineSimilarity
from tests.parity import random_embeddings


@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("with_ref", [False, True])
def test_matrix_and_gradients_match_pml(power, with_ref):
    x = random_embeddings(8, 6, torch.float64, seed=1, requires_grad=True)
    y = random_embeddings(5, 6, torch.float64, seed=2, requires_grad=True) if with_ref else None
    leaves = (x, y) if with_ref else (x,)
    m1 = CosineSimilarity(power=power)(*leaves)
    m2 = pml_distances.CosineSimilarity(power=power)(*leaves)
    torch.testing.assert_close(m1, m2)
    for a, b in zip(torch.autograd.grad(m1.sum(), leaves), torch.autograd.grad(m2.sum(), leaves)):
        torch.testing.assert_close(a, b)


def test_values_are_cosines():
    x = random_embeddings(10, 4, torch.float64, seed=3) * 5
    mat = CosineSimilarity()(x)
    expected = torch.nn.functional.cosine_similarity(x.unsqueeze(1), x.unsqueeze(0), dim=2)
    torch.testing.assert_close(mat, expected)
    torch.testing.assert_close(mat.diagonal(), torch.ones(10, dtype=torch.float64))
    assert mat.max() <= 1 + 1e-12 and mat.min() >= -1 - 1e-12


def test_scale_invariant_and_always_normalised():
    d = CosineSimilarity()
    assert d.normalize_embeddings and d.is_inverted
    x, y = random_embeddings(4, 3, seed=4), random_embeddings(6, 3, seed=5)
    torch.testing.assert_close(d(x, y), d(x * 7, y * 0.01))


def test_pairwise_matches_pml():
    x, y = random_embeddings(5, 3, seed=6), random_embeddings(5, 3, seed=7)
    ours = CosineSimilarity()
    theirs = pml_distances.CosineSimilarity()
    torch.testing.assert_close(
        ours.pairwise_distance(ours.normalize(x), ours.normalize(y)),
        theirs.pairwise_distance(theirs.normalize(x), theirs.normalize(y)),
    )


def test_inverted_direction_helpers():
    d = CosineSimilarity()
    x, y = torch.tensor([0.9]), torch.tensor([0.1])
    # a similarity of 0.9 is closer than 0.1: the margin of y over x is y - x
    torch.testing.assert_close(d.margin(x, y), y - x)
    assert d.smallest_dist(torch.tensor([0.1, 0.9])) == 0.9
    assert d.largest_dist(torch.tensor([0.1, 0.9])) == 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_dtype(dtype):
    x = random_embeddings(6, 8, seed=8)
    mat = CosineSimilarity()(x.to(dtype))
    assert mat.dtype == dtype
    torch.testing.assert_close(mat.float(), CosineSimilarity()(x), rtol=2e-2, atol=2e-2)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="p"):
        CosineSimilarity(p=0)
    with pytest.raises((TypeError, ValueError)):
        CosineSimilarity(normalize_embeddings=False)  # it always normalises
    with pytest.raises(ValueError, match="2D"):
        CosineSimilarity()(torch.randn(2, 3, 4))
