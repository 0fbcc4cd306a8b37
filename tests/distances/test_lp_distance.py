"""LpDistance against PML's: matrix, pairwise distances, gradients, stats and errors."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from metricssl.distances.lp_distance import LpDistance
from tests.parity import random_embeddings


def _grads(fn, *leaves):
    out = fn(*leaves)
    return out, torch.autograd.grad(out.sum(), leaves)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("with_ref", [False, True])
def test_matrix_and_gradients_match_pml(p, normalize, power, with_ref):
    x = random_embeddings(9, 5, torch.float64, seed=1, requires_grad=True)
    y = random_embeddings(7, 5, torch.float64, seed=2, requires_grad=True) if with_ref else None
    ours = LpDistance(normalize_embeddings=normalize, p=p, power=power)
    theirs = pml_distances.LpDistance(normalize_embeddings=normalize, p=p, power=power)
    leaves = (x, y) if with_ref else (x,)
    m1, g1 = _grads(lambda *a: ours(*a), *leaves)
    m2, g2 = _grads(lambda *a: theirs(*a), *leaves)
    assert m1.shape == (9, 7 if with_ref else 9)
    torch.testing.assert_close(m1, m2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("ref", ["none", "other", "same"])
def test_squared_euclidean_matches_pml_on_larger_batches(dtype, tol, normalize, ref):
    # power=2 is computed without cdist's square root; beyond 25 rows cdist takes its own
    # matmul path, which is what this is compared with.
    x = random_embeddings(40, 16, dtype, seed=3, requires_grad=True)
    y = random_embeddings(30, 16, dtype, seed=4, requires_grad=True)
    args = {"none": (x,), "other": (x, y), "same": (x, x)}[ref]
    leaves = (x, y) if ref == "other" else (x,)
    ours = LpDistance(normalize_embeddings=normalize, power=2)
    theirs = pml_distances.LpDistance(normalize_embeddings=normalize, power=2)
    m1, g1 = _grads(lambda *a: ours(*args), *leaves)
    m2, g2 = _grads(lambda *a: theirs(*args), *leaves)
    assert m1.min() >= 0
    torch.testing.assert_close(m1, m2, atol=tol, rtol=tol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_pairwise_distance_matches_pml(p):
    x = random_embeddings(6, 4, torch.float64, seed=3)
    y = random_embeddings(6, 4, torch.float64, seed=4)
    ours = LpDistance(p=p).pairwise_distance(x, y)
    theirs = pml_distances.LpDistance(p=p).pairwise_distance(x, y)
    torch.testing.assert_close(ours, theirs)
    # pairwise_distance is the diagonal of the unnormalised matrix
    full = LpDistance(p=p, normalize_embeddings=False)(x, y)
    torch.testing.assert_close(ours, full.diagonal(), rtol=1e-6, atol=1e-6)


def test_known_values():
    d = LpDistance(normalize_embeddings=False)
    mat = d(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(mat, torch.tensor([[5.0], [13.0**0.5]]))
    # normalised: unit vectors at right angles are sqrt(2) apart
    mat = LpDistance()(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 7.0]]))
    torch.testing.assert_close(mat, torch.tensor([[2.0**0.5]]))
    # L1
    mat = LpDistance(p=1, normalize_embeddings=False)(
        torch.tensor([[1.0, -2.0]]), torch.zeros(1, 2)
    )
    torch.testing.assert_close(mat, torch.tensor([[3.0]]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_dtype_and_is_close_to_fp32(dtype):
    x = random_embeddings(12, 8, torch.float32, seed=5)
    mat = LpDistance()(x.to(dtype))
    assert mat.dtype == dtype
    torch.testing.assert_close(mat.float(), LpDistance()(x), rtol=2e-2, atol=2e-2)


def test_direction_helpers():
    d = LpDistance()
    assert not d.is_inverted
    x, y = torch.tensor([1.0, 5.0]), torch.tensor([2.0, 3.0])
    torch.testing.assert_close(d.margin(x, y), x - y)
    assert d.smallest_dist(torch.tensor([3.0, 1.0, 2.0])) == 1.0
    assert d.largest_dist(torch.tensor([3.0, 1.0, 2.0])) == 3.0
    vals, idx = d.smallest_dist(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), dim=1)
    assert idx.tolist() == [1, 0]


def test_collect_stats_records_norms_like_pml():
    x = random_embeddings(5, 3, torch.float64, seed=6) * 3
    ours, theirs = LpDistance(collect_stats=True), pml_distances.LpDistance(collect_stats=True)
    ours(x)
    theirs(x)
    for name in ["initial_avg_query_norm", "initial_avg_ref_norm", "final_avg_query_norm"]:
        assert getattr(ours, name) == pytest.approx(getattr(theirs, name))
    assert ours.final_avg_query_norm == pytest.approx(1.0)
    off = LpDistance(collect_stats=False)
    off(x)
    assert not hasattr(off, "initial_avg_query_norm")  # as in PML: no stat attributes at all


def test_empty_query_gives_empty_matrix():
    mat = LpDistance()(torch.zeros(0, 4), torch.randn(3, 4))
    assert mat.shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(p=0), ValueError, "p"),
        (dict(p=-1), ValueError, "p"),
        (dict(p="2"), TypeError, "p"),
        (dict(power="1"), TypeError, "power"),
        (dict(power=float("nan")), ValueError, "power"),
    ],
)
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        LpDistance(**kwargs)


def test_bad_inputs_name_the_argument():
    d = LpDistance()
    with pytest.raises(ValueError, match="query_emb.*2D"):
        d(torch.randn(4))
    with pytest.raises(ValueError, match="ref_emb.*2D"):
        d(torch.randn(4, 3), torch.randn(2, 3, 1))
    with pytest.raises(TypeError, match="query_emb.*floating"):
        d(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="query_emb.*Tensor"):
        d([[1.0, 2.0]])
    with pytest.raises(ValueError, match="embedding size 3.*ref_emb.*4"):
        d(torch.randn(2, 3), torch.randn(2, 4))
