"""DotProductSimilarity against PML's."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl.distances.dot_product_similarity import DotProductSimilarity
from tests.parity import random_embeddings


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("with_ref", [False, True])
def test_matrix_and_gradients_match_pml(normalize, power, with_ref):
    x = random_embeddings(7, 4, torch.float64, seed=1, requires_grad=True)
    y = random_embeddings(3, 4, torch.float64, seed=2, requires_grad=True) if with_ref else None
    leaves = (x, y) if with_ref else (x,)
    m1 = DotProductSimilarity(normalize_embeddings=normalize, power=power)(*leaves)
    m2 = pml_distances.DotProductSimilarity(normalize_embeddings=normalize, power=power)(*leaves)
    torch.testing.assert_close(m1, m2)
    for a, b in zip(torch.autograd.grad(m1.sum(), leaves), torch.autograd.grad(m2.sum(), leaves)):
        torch.testing.assert_close(a, b)


def test_unnormalised_is_the_inner_product():
    x, y = random_embeddings(4, 3, seed=3), random_embeddings(5, 3, seed=4)
    d = DotProductSimilarity(normalize_embeddings=False)
    torch.testing.assert_close(d(x, y), x @ y.T)
    torch.testing.assert_close(d.pairwise_distance(x, x), (x * x).sum(1))
    assert d.is_inverted


def test_pairwise_matches_pml():
    x, y = random_embeddings(6, 3, seed=5), random_embeddings(6, 3, seed=6)
    torch.testing.assert_close(
        DotProductSimilarity().pairwise_distance(x, y),
        pml_distances.DotProductSimilarity().pairwise_distance(x, y),
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="p"):
        DotProductSimilarity(p=-2)
    with pytest.raises(TypeError, match="power"):
        DotProductSimilarity(power=None)
