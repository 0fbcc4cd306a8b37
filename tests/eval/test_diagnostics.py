"""Alignment, uniformity, effective rank (RankMe) and embedding std on known cases."""

import math

import pytest
import torch

from metricssl.core import chunking
from metricssl.eval.diagnostics import (
    alignment,
    effective_rank,
    embedding_std,
    singular_values,
    uniformity,
)


@pytest.fixture
def small_budget():
    before = chunking.get_memory_budget()
    chunking.set_memory_budget(40_000)
    yield
    chunking.set_memory_budget(before)


def test_alignment():
    x = torch.randn(50, 8)
    assert alignment(x, 3 * x) == pytest.approx(0.0, abs=1e-12)  # scale-free: normalised
    assert alignment(x, -x) == pytest.approx(4.0)  # antipodal: |2|^2
    assert alignment(x, -x, alpha=1) == pytest.approx(2.0)


def test_uniformity_matches_wang_and_isola_formula(small_budget):
    x = torch.randn(120, 5, dtype=torch.float64)
    z = torch.nn.functional.normalize(x, dim=1)
    expected = torch.pdist(z).pow(2).mul(-2).exp().mean().log().item()
    assert uniformity(x) == pytest.approx(expected, rel=1e-5)
    assert uniformity(torch.ones(10, 3)) == pytest.approx(0.0, abs=1e-6)  # collapsed


def test_effective_rank_known_cases(small_budget):
    assert effective_rank(torch.ones(100, 16)) == pytest.approx(1.0, abs=1e-3)  # collapse
    assert effective_rank(torch.eye(8)) == pytest.approx(8.0, rel=1e-4)  # equal spectrum
    gaussian = torch.randn(1000, 32, generator=torch.Generator().manual_seed(0))
    assert effective_rank(gaussian) > 30
    assert effective_rank(torch.zeros(5, 3)) == 0.0
    x = torch.randn(7, 20, dtype=torch.float64)  # n < d path
    torch.testing.assert_close(singular_values(x), torch.linalg.svdvals(x))
    y = torch.randn(300, 6, dtype=torch.float64)  # Gram path, chunked
    torch.testing.assert_close(singular_values(y), torch.linalg.svdvals(y.float().double()))


def test_embedding_std(small_budget):
    assert embedding_std(torch.ones(50, 8)) == 0.0
    gaussian = torch.randn(5000, 64, generator=torch.Generator().manual_seed(1))
    assert embedding_std(gaussian) == pytest.approx(1 / math.sqrt(64), rel=0.05)
    per_dim = embedding_std(gaussian, reduction="none")
    assert per_dim.shape == (64,)
    z = torch.nn.functional.normalize(gaussian.double(), dim=1)
    torch.testing.assert_close(per_dim, z.std(dim=0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: alignment(torch.randn(4, 2), torch.randn(5, 2)), ValueError, "shape"),
        (lambda: alignment(torch.randn(4, 2), torch.randn(4, 2), alpha=0), ValueError, "alpha"),
        (lambda: uniformity(torch.randn(1, 3)), ValueError, "at least 2"),
        (lambda: uniformity(torch.randn(4, 3), t=-1), ValueError, "t must"),
        (lambda: embedding_std(torch.randn(1, 3)), ValueError, "at least 2"),
        (lambda: embedding_std(torch.randn(4, 3), reduction="sum"), ValueError, "reduction"),
        (lambda: effective_rank(torch.full((3, 3), float("inf"))), ValueError, "NaN or Inf"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
