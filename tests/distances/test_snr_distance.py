"""SNRDistance against PML's (which builds a query x ref x dim tensor; ours does not)."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl.distances.snr_distance import SNRDistance
from tests.parity import random_embeddings


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("with_ref", [False, True])
def test_matrix_and_gradients_match_pml(normalize, power, with_ref):
    x = random_embeddings(11, 6, torch.float64, seed=1, requires_grad=True)
    y = random_embeddings(4, 6, torch.float64, seed=2, requires_grad=True) if with_ref else None
    leaves = (x, y) if with_ref else (x,)
    m1 = SNRDistance(normalize_embeddings=normalize, power=power)(*leaves)
    m2 = pml_distances.SNRDistance(normalize_embeddings=normalize, power=power)(*leaves)
    torch.testing.assert_close(m1, m2)
    for a, b in zip(torch.autograd.grad(m1.sum(), leaves), torch.autograd.grad(m2.sum(), leaves)):
        torch.testing.assert_close(a, b)


def test_float32_close_to_pml_and_zero_on_the_diagonal():
    x = random_embeddings(40, 32, torch.float32, seed=3)
    ours = SNRDistance()(x)
    torch.testing.assert_close(ours, pml_distances.SNRDistance()(x), rtol=1e-4, atol=1e-5)
    assert ours.diagonal().abs().max() < 1e-5


def test_not_symmetric_in_general():
    # var(q - r) / var(q): the denominator belongs to the query
    x = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 9.0]])
    mat = SNRDistance(normalize_embeddings=False)(x)
    assert not torch.allclose(mat, mat.T)
    torch.testing.assert_close(mat, pml_distances.SNRDistance(normalize_embeddings=False)(x))


def test_pairwise_matches_pml_and_the_matrix_diagonal():
    x = random_embeddings(5, 7, torch.float64, seed=4)
    y = random_embeddings(5, 7, torch.float64, seed=5)
    ours = SNRDistance(normalize_embeddings=False)
    torch.testing.assert_close(
        ours.pairwise_distance(x, y),
        pml_distances.SNRDistance(normalize_embeddings=False).pairwise_distance(x, y),
    )
    torch.testing.assert_close(ours.pairwise_distance(x, y), ours(x, y).diagonal())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_dtype(dtype):
    x = random_embeddings(10, 16, seed=6)
    mat = SNRDistance()(x.to(dtype))
    assert mat.dtype == dtype
    torch.testing.assert_close(mat.float(), SNRDistance()(x), rtol=5e-2, atol=5e-2)


def test_not_inverted():
    assert not SNRDistance().is_inverted
