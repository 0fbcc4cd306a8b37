"""NegativeCosineSimilarityLoss: known values, stop-gradient, dtypes, errors."""

import pytest
import torch
import torch.nn.functional as F

from metricssl import reducers
from metricssl.losses.negative_cosine_loss import NegativeCosineSimilarityLoss
from tests.parity import random_embeddings


def test_known_values():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[2.0, 0.0], [-5.0, 0.0], [0.0, 7.0], [4.0, 3.0]])
    loss = NegativeCosineSimilarityLoss()
    # cosines: 1, -1, 0, 24/25
    expected = -(1 - 1 + 0 + 24 / 25) / 4
    assert loss(p, z).item() == pytest.approx(expected)
    sums = NegativeCosineSimilarityLoss(reducer=reducers.SumReducer())
    assert sums(p, z).item() == pytest.approx(4 * expected)


def test_byol_relation_and_gradient():
    p = random_embeddings(16, 8, torch.float64, seed=1, requires_grad=True)
    z = random_embeddings(16, 8, torch.float64, seed=2, requires_grad=True)
    loss = NegativeCosineSimilarityLoss()(p, z)
    byol = (F.normalize(p, dim=1) - F.normalize(z.detach(), dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(byol, 2 + 2 * loss)
    gp, gz = torch.autograd.grad(loss, [p, z], allow_unused=True)
    (gp_byol,) = torch.autograd.grad(byol, [p])
    torch.testing.assert_close(2 * gp, gp_byol)
    assert gz is None  # stop-gradient: the target gets nothing


def test_without_stop_gradient_target_gets_gradient():
    p = random_embeddings(6, 4, torch.float64, seed=3, requires_grad=True)
    z = random_embeddings(6, 4, torch.float64, seed=4, requires_grad=True)
    NegativeCosineSimilarityLoss(stop_gradient=False)(p, z).backward()
    expected = -F.cosine_similarity(p.detach(), z.detach().requires_grad_(), dim=1)
    assert z.grad is not None and z.grad.abs().sum() > 0
    zz = z.detach().clone().requires_grad_()
    (-F.cosine_similarity(p.detach(), zz, dim=1).mean()).backward()
    torch.testing.assert_close(z.grad, zz.grad)
    assert expected.shape == (6,)


def test_symmetric_use():
    p1, p2, z1, z2 = (random_embeddings(8, 5, torch.float64, seed=s) for s in range(4))
    loss_fn = NegativeCosineSimilarityLoss()
    sym = 0.5 * (loss_fn(p1, z2) + loss_fn(p2, z1))
    expected = -0.5 * (
        F.cosine_similarity(p1, z2, dim=1).mean() + F.cosine_similarity(p2, z1, dim=1).mean()
    )
    torch.testing.assert_close(sym, expected)


def test_zero_vector_gives_finite_loss():
    p = torch.zeros(2, 3, requires_grad=True)
    z = torch.ones(2, 3)
    loss = NegativeCosineSimilarityLoss()(p, z)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes(dtype):
    p64 = random_embeddings(32, 16, torch.float64, seed=5)
    z64 = random_embeddings(32, 16, torch.float64, seed=6)
    expected = -F.cosine_similarity(p64, z64, dim=1).mean()
    p = p64.to(dtype).requires_grad_()
    got = NegativeCosineSimilarityLoss()(p, z64.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), expected, rtol=1e-2, atol=1e-2)
    got.backward()
    assert p.grad.dtype == dtype


def test_nan_gives_nan():
    p = random_embeddings(4, 3, seed=7)
    p[1, 1] = float("nan")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(NegativeCosineSimilarityLoss()(p, torch.ones(4, 3)))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(stop_gradient=None), TypeError),
        (dict(eps=0), ValueError),
        (dict(eps="1"), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        NegativeCosineSimilarityLoss(**kwargs)


def test_bad_inputs():
    loss = NegativeCosineSimilarityLoss()
    p = random_embeddings(4, 3, seed=8)
    with pytest.raises(ValueError, match="second view"):
        loss(p)
    with pytest.raises(ValueError, match="same shape"):
        loss(p, p[:, :2])
    with pytest.raises(ValueError, match="labels"):
        loss(p, ref_emb=p, ref_labels=torch.arange(4))
    with pytest.raises(TypeError):
        loss(p, p.long())
