"""BarlowTwinsLoss: the paper's formula written out, gradients, dtypes, errors."""

import pytest
import torch

from metricssl import reducers, regularizers
from metricssl.losses.barlow_twins_loss import BarlowTwinsLoss
from tests.parity import random_embeddings


def reference(z1, z2, lam=5e-3, scale=1.0, eps=1e-5):
    """Zbontar et al. (2021), Algorithm 1, written with loops over the D x D matrix."""
    n, d = z1.shape
    bn = torch.nn.BatchNorm1d(d, affine=False, eps=eps, dtype=z1.dtype)  # training mode
    c = bn(z1).T @ bn(z2) / n
    loss = 0
    for i in range(d):
        for j in range(d):
            loss = loss + ((1 - c[i, j]) ** 2 if i == j else lam * c[i, j] ** 2)
    return scale * loss


def two_views(n, d, dtype=torch.float64, seed=0):
    return random_embeddings(n, d, dtype, seed=seed), random_embeddings(n, d, dtype, seed=seed + 1)


@pytest.mark.parametrize("n, d", [(2, 1), (3, 4), (16, 8), (40, 12), (4, 12), (6, 40)])
@pytest.mark.parametrize("lam, scale", [(5e-3, 1.0), (0.5, 0.024)])
def test_value_and_gradients_match_the_formula(n, d, lam, scale):
    x, y = two_views(n, d, seed=n + d)
    x1, y1 = x.clone().requires_grad_(), y.clone().requires_grad_()
    x2, y2 = x.clone().requires_grad_(), y.clone().requires_grad_()
    ours = BarlowTwinsLoss(lambda_param=lam, scale_loss=scale)(x1, y1)
    expected = reference(x2, y2, lam, scale)
    torch.testing.assert_close(ours, expected)
    g1 = torch.autograd.grad(ours, [x1, y1])
    g2 = torch.autograd.grad(expected, [x2, y2])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_identical_decorrelated_views_give_zero():
    # Whitened data (orthonormal columns after centring) has C = I for two equal views.
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 8, generator=g, dtype=torch.float64))
    q = q - q.mean(dim=0)
    q, _ = torch.linalg.qr(q)
    z = q * 8.0  # rows 64, so var = 1/64 * 64 = 1
    loss = BarlowTwinsLoss(eps=0.0)(z, z.clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-10)


def test_invariant_to_affine_rescaling_of_features():
    x, y = two_views(32, 6, seed=3)
    loss = BarlowTwinsLoss(eps=0.0)
    scale = torch.linspace(0.5, 4.0, 6, dtype=torch.float64)
    torch.testing.assert_close(loss(x, y), loss(x * scale + 3.0, y))


def test_float32_and_bfloat16():
    x, y = two_views(64, 16, seed=4)
    expected = reference(x, y)
    got32 = BarlowTwinsLoss()(x.float(), y.float())
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), expected, rtol=1e-4, atol=1e-5)
    xb = x.to(torch.bfloat16).requires_grad_()
    got16 = BarlowTwinsLoss()(xb, y.to(torch.bfloat16))
    assert got16.dtype == torch.bfloat16
    expected16 = reference(xb.detach().double(), y.to(torch.bfloat16).double())
    torch.testing.assert_close(got16.double(), expected16, rtol=2e-2, atol=2e-2)
    got16.backward()
    assert xb.grad.dtype == torch.bfloat16 and torch.isfinite(xb.grad).all()


def test_positional_and_keyword_views_agree_and_reducer_is_ignored():
    x, y = two_views(16, 8, seed=5)
    a = BarlowTwinsLoss()(x, y)
    torch.testing.assert_close(a, BarlowTwinsLoss()(x, ref_emb=y))
    torch.testing.assert_close(a, BarlowTwinsLoss(reducer=reducers.SumReducer())(x, y))


def test_embedding_regularizer_is_added():
    x, y = two_views(16, 8, seed=6)
    reg = BarlowTwinsLoss(
        embedding_regularizer=regularizers.LpRegularizer(), embedding_reg_weight=0.1
    )
    expected = BarlowTwinsLoss()(x, y) + 0.1 * x.norm(dim=1).mean()
    torch.testing.assert_close(reg(x, y), expected)


def test_gather_distributed_single_process_is_identity():
    x, y = two_views(16, 8, seed=8)
    torch.testing.assert_close(
        BarlowTwinsLoss(gather_distributed=True)(x, y), BarlowTwinsLoss()(x, y)
    )


def test_nan_embeddings_give_nan():
    x, y = two_views(8, 4, seed=9)
    y[3, 1] = float("inf")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(BarlowTwinsLoss()(x, y))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(lambda_param=-1e-3), ValueError),
        (dict(lambda_param="x"), TypeError),
        (dict(scale_loss=0), ValueError),
        (dict(eps=-1.0), ValueError),
        (dict(gather_distributed="yes"), TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        BarlowTwinsLoss(**kwargs)


def test_bad_inputs():
    loss = BarlowTwinsLoss()
    x, y = two_views(8, 4, seed=10)
    with pytest.raises(ValueError, match="second view"):
        loss(x)
    with pytest.raises(ValueError, match="labels"):
        loss(x, torch.arange(8), ref_emb=y)
    with pytest.raises(ValueError, match="same shape"):
        loss(x, y[:, :3])
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss(x[:1], y[:1])
    with pytest.raises(ValueError):
        loss(x[0], y[0])


def test_autocast_keeps_the_statistics_in_float32():
    x, y = two_views(32, 16, seed=11)
    expected = BarlowTwinsLoss()(x.float(), y.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = BarlowTwinsLoss()(x.float(), y.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("n, d", [(8, 64), (40, 64)])  # Gram path, direct path
def test_float32_matches_float64_on_both_paths(n, d):
    x, y = two_views(n, d, seed=13)
    y = x + 0.1 * y  # correlated views, as during training
    expected = BarlowTwinsLoss()(x, y)
    torch.testing.assert_close(BarlowTwinsLoss()(x.float(), y.float()).double(), expected)
