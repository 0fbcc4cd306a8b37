"""VICRegLoss: parity with PML in values and gradients, the paper's formula, errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers, regularizers
from metricssl.losses.vicreg_loss import VICRegLoss, off_diagonal
from tests.parity import loss_parity, random_embeddings


def two_views(n, d, dtype=torch.float64, seed=0, scale=1.0):
    return (
        random_embeddings(n, d, dtype, seed=seed) * scale,
        random_embeddings(n, d, dtype, seed=seed + 100) * scale,
    )


@pytest.mark.parametrize("n", [2, 3, 17, 64])
@pytest.mark.parametrize("d", [1, 5, 32])
def test_parity_float64(n, d):
    x, y = two_views(n, d, seed=n * d)
    loss_parity(VICRegLoss(), pml_losses.VICRegLoss(), x, ref_emb=y)


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0])
def test_parity_float32_with_collapsed_and_spread_dimensions(scale):
    # Small scale: every std < 1, the variance hinge is active; large: it is off.
    x, y = two_views(48, 24, torch.float32, seed=7, scale=scale)
    loss_parity(VICRegLoss(), pml_losses.VICRegLoss(), x, ref_emb=y)


def test_parity_without_ref_emb():
    x = random_embeddings(20, 6, torch.float64, seed=1)
    loss_parity(VICRegLoss(), pml_losses.VICRegLoss(), x)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(invariance_lambda=1, variance_mu=2, covariance_v=3, eps=1e-2),
        dict(invariance_lambda=0, variance_mu=25, covariance_v=0),
    ],
)
def test_parity_hyperparameters(kwargs):
    x, y = two_views(32, 16, seed=2, scale=0.5)
    loss_parity(VICRegLoss(**kwargs), pml_losses.VICRegLoss(**kwargs), x, ref_emb=y)


@pytest.mark.parametrize("ours, theirs", [(reducers.SumReducer, pml_reducers.SumReducer)])
def test_parity_other_reducer(ours, theirs):
    x, y = two_views(16, 8, seed=3, scale=0.5)
    loss_parity(VICRegLoss(reducer=ours()), pml_losses.VICRegLoss(reducer=theirs()), x, ref_emb=y)


def test_parity_bfloat16_against_float32():
    x, y = two_views(32, 16, torch.bfloat16, seed=4, scale=0.5)
    v, _ = loss_parity(
        VICRegLoss(), pml_losses.VICRegLoss(), x, ref_emb=y, reference_dtype=torch.float32
    )
    assert v.dtype == torch.bfloat16


def test_matches_the_paper_formula():
    x, y = two_views(10, 4, seed=5, scale=0.7)
    lam, mu, nu, eps = 25.0, 25.0, 1.0, 1e-4

    def v(z):
        return torch.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()

    def c(z):
        cov = torch.cov(z.T)
        return (cov.pow(2).sum() - cov.diagonal().pow(2).sum()) / z.shape[1]

    s = ((x - y) ** 2).sum(dim=1).mean() / x.shape[1]
    # PML halves each view's variance term ("/ 2 for averaging").
    expected = lam * s + mu * (v(x) + v(y)) / 2 + nu * (c(x) + c(y))
    torch.testing.assert_close(VICRegLoss()(x, ref_emb=y), expected)


def test_positional_second_view_equals_keyword():
    x, y = two_views(12, 6, seed=6)
    loss = VICRegLoss()
    torch.testing.assert_close(loss(x, y), loss(x, ref_emb=y))


def test_loss_dictionary_names_and_shapes():
    x, y = two_views(12, 6, seed=6)
    loss = VICRegLoss()
    d = loss.compute_loss(x, None, None, y, None)
    assert list(d) == ["invariance_loss", "variance_loss1", "variance_loss2", "covariance_loss"]
    assert d["invariance_loss"]["losses"].shape == (12,)
    assert d["variance_loss1"]["losses"].shape == (6,)
    assert d["covariance_loss"]["losses"].ndim == 0


def test_off_diagonal_view():
    m = torch.arange(16.0).view(4, 4)
    got = off_diagonal(m)
    expected = m[~torch.eye(4, dtype=torch.bool)].view(4, 3)
    assert torch.equal(got.reshape(-1), expected.reshape(-1))
    assert off_diagonal(torch.ones(1, 1)).numel() == 0


def test_gather_distributed_single_process_is_identity():
    x, y = two_views(16, 8, seed=8)
    torch.testing.assert_close(VICRegLoss(gather_distributed=True)(x, y), VICRegLoss()(x, y))


def test_nan_embeddings_give_nan():
    x, y = two_views(8, 4, seed=9)
    x[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(VICRegLoss()(x, y))


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(distance=distances.LpDistance()), ValueError),
        (dict(embedding_regularizer=regularizers.LpRegularizer()), ValueError),
        (dict(invariance_lambda=-1), ValueError),
        (dict(variance_mu="a"), TypeError),
        (dict(covariance_v=float("nan")), ValueError),
        (dict(eps=-1e-4), ValueError),
        (dict(gather_distributed=1), TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        VICRegLoss(**kwargs)


def test_bad_inputs():
    loss = VICRegLoss()
    x, y = two_views(8, 4, seed=10)
    with pytest.raises(ValueError, match="labels"):
        loss(x, torch.arange(8))
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(x, ref_emb=y, indices_tuple=(torch.arange(2),) * 3)
    with pytest.raises(ValueError, match="same shape"):
        loss(x, y[:6])
    with pytest.raises(ValueError, match="twice"):
        loss(x, y, ref_emb=y)
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss(x[:1], y[:1])
    with pytest.raises(TypeError):
        loss(x, y.float())


def test_autocast_keeps_the_statistics_in_float32():
    x, y = two_views(32, 16, torch.float32, seed=11, scale=0.5)
    expected = VICRegLoss()(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = VICRegLoss()(x, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


def test_per_term_methods_match_pml():
    x, y = two_views(20, 7, seed=12, scale=0.6)
    ours, theirs = VICRegLoss(eps=1e-3), pml_losses.VICRegLoss(eps=1e-3)
    torch.testing.assert_close(ours.invariance_loss(x, y), theirs.invariance_loss(x, y))
    for a, b in zip(ours.variance_loss(x, y), theirs.variance_loss(x, y)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.covariance_loss(x, y), theirs.covariance_loss(x, y))
