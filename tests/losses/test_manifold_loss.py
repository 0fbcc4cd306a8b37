"""ManifoldLoss: parity with PML (seeded meta classes), the paper's formula, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from metricssl import distances
from metricssl.losses.manifold_loss import ManifoldLoss
from tests.learnable_parity import sgd_parity, weight_parity
from tests.parity import random_embeddings

# PML inverts the graph matrix in float32 whatever the input dtype; float64 runs here invert
# in float64, so float64 parity holds to float32 precision only (the matrix is well
# conditioned: its condition number is at most (1 + alpha) / (1 - alpha)).
FLOAT64_VS_PML = dict(rtol=1e-5, atol=1e-7)


def pair(dim, dtype=torch.float32, **kwargs):
    return ManifoldLoss(dim, **kwargs).to(dtype), pml_losses.ManifoldLoss(dim, **kwargs).to(dtype)


def meta_classes(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (n,), generator=g)


def reference(x, proxies, meta, alpha, margin, lambda_c):
    """Aziere & Todorovic's loss as PML computes it, written out in float64."""
    n = len(x)
    z = F.normalize(torch.cat([x, proxies]).double(), dim=1)
    s = torch.exp((z @ z.T).clamp(min=0) / 0.5)
    s.fill_diagonal_(0)
    d = torch.diag(s.sum(dim=1) ** -0.5)
    walk = (1 - alpha) * torch.linalg.inv(torch.eye(len(z), dtype=z.dtype) - alpha * d @ s @ d)

    def hinge(sim):
        total = 0
        for i in range(n):
            v = sim[i] - sim[i, meta[i]] + margin
            keep = (v >= 0) & (torch.arange(sim.shape[1]) != meta[i])
            total = total + torch.log(1 + torch.exp(v[keep]).sum())
        return total / n

    ctx = hinge(F.cosine_similarity(walk[:n, None], walk[None, n:], dim=-1))
    if lambda_c == math.inf:
        return ctx
    return hinge(walk[:n, n:]) + lambda_c * ctx


def test_default_initialisation_draws_like_pml():
    torch.manual_seed(0)
    ours = ManifoldLoss(5, K=7)
    torch.manual_seed(0)
    theirs = pml_losses.ManifoldLoss(5, K=7)
    assert [n for n, _ in ours.named_parameters()] == ["proxies"]
    assert torch.equal(ours.proxies, theirs.proxies)


@pytest.mark.parametrize("n, k", [(6, 1), (20, 3), (40, 8), (12, 12)])
def test_seeded_random_meta_classes_match_pml_float32(n, k):
    x = random_embeddings(n, 6, torch.float32, seed=n)
    weight_parity(*pair(6, K=k), x, seed=n + k)


@pytest.mark.parametrize("n, k", [(9, 2), (30, 5)])
def test_seeded_random_meta_classes_match_pml_float64(n, k):
    x = random_embeddings(n, 6, torch.float64, seed=n)
    weight_parity(*pair(6, torch.float64, K=k), x, seed=3, **FLOAT64_VS_PML)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(K=4),
        dict(K=4, lambdaC=0.0),
        dict(K=4, lambdaC=2.5, margin=0.05),
        dict(K=3, alpha=0.3, margin=0.1),
        dict(K=3, alpha=0.95),
    ],
)
@pytest.mark.parametrize("n", [2, 16])
def test_meta_classes_as_indices_tuple(kwargs, n):
    x = random_embeddings(n, 8, torch.float64, seed=n)
    meta = meta_classes(n, kwargs["K"], seed=n)
    weight_parity(*pair(8, torch.float64, **kwargs), x, None, meta, **FLOAT64_VS_PML)


@pytest.mark.parametrize("lambda_c", [0.0, 1.0, 3.0, math.inf])
def test_matches_the_paper_formula_in_float64(lambda_c):
    x = random_embeddings(14, 5, torch.float64, seed=1)
    loss_fn = ManifoldLoss(5, K=4, lambdaC=lambda_c, margin=0.02).double()
    meta = meta_classes(14, 4, seed=2)
    expected = reference(x, loss_fn.proxies.detach(), meta, 0.8, 0.02, lambda_c)
    torch.testing.assert_close(loss_fn(x, indices_tuple=meta), expected, rtol=1e-10, atol=1e-12)


def test_lambda_c_inf_is_the_context_loss_alone():
    # PML's code computes inf * loss_ctx (inf, or NaN when loss_ctx is 0); the paper and
    # PML's docstring mean the context loss alone, which is what this class returns.
    x = random_embeddings(10, 5, torch.float64, seed=3)
    meta = meta_classes(10, 3, seed=4)
    ours, theirs = pair(5, torch.float64, K=3, lambdaC=math.inf)
    with torch.no_grad():
        ours.proxies.copy_(theirs.proxies)
    value = ours(x, indices_tuple=meta)
    assert math.isfinite(value.item())
    assert not math.isfinite(theirs(x, indices_tuple=meta).item())
    with_int = ManifoldLoss(5, K=3, lambdaC=1.0).double()
    no_ctx = ManifoldLoss(5, K=3, lambdaC=0.0).double()
    for m in (with_int, no_ctx):
        with torch.no_grad():
            m.proxies.copy_(theirs.proxies)
    expected = with_int(x, indices_tuple=meta) - no_ctx(x, indices_tuple=meta)
    torch.testing.assert_close(value, expected)


def test_parity_bfloat16_against_float32():
    x = random_embeddings(24, 8, torch.bfloat16, seed=5)
    meta = meta_classes(24, 4, seed=6)
    ours, theirs = pair(8, K=4, margin=0.01)
    v, _ = weight_parity(ours, theirs, x, None, meta, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16
    assert ours.proxies.dtype == torch.float32


def test_dot_product_similarity():
    x = random_embeddings(16, 6, torch.float64, seed=7)
    meta = meta_classes(16, 4, seed=8)
    weight_parity(
        ManifoldLoss(6, K=4, distance=distances.DotProductSimilarity()).double(),
        pml_losses.ManifoldLoss(6, K=4, distance=pml_distances.DotProductSimilarity()).double(),
        x,
        None,
        meta,
        **FLOAT64_VS_PML,
    )


def test_sgd_steps_with_a_separate_loss_optimizer():
    x = random_embeddings(24, 8, torch.float32, seed=9)
    sgd_parity(*pair(8, K=4, margin=0.01), x, None, meta_classes(24, 4, seed=10), steps=3)


def test_seeded_sgd_steps_draw_the_same_meta_classes():
    x = random_embeddings(20, 8, torch.float32, seed=11)
    sgd_parity(*pair(8, K=5), x, None, steps=2, seed=12)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(l=0), ValueError, "l must"),
        (dict(l=4.0), TypeError, "l must"),
        (dict(l=4, K=0), ValueError, "K"),
        (dict(l=4, lambdaC=-1.0), ValueError, "lambdaC"),
        (dict(l=4, alpha=1.0), ValueError, "alpha"),
        (dict(l=4, alpha=-0.1), ValueError, "alpha"),
        (dict(l=4, margin="0"), TypeError, "margin"),
        (dict(l=4, distance=1), TypeError, "distance"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ManifoldLoss(**kwargs)


def test_bad_inputs():
    loss_fn = ManifoldLoss(4, K=3)
    x = random_embeddings(6, 4, torch.float32, seed=13)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, ref_emb=x.clone())
    with pytest.raises(ValueError, match="l=4"):
        loss_fn(torch.randn(6, 5))
    with pytest.raises(ValueError, match="at least K=3"):
        loss_fn(x[:2])
    with pytest.raises(ValueError, match=r"\[0, K=3\)"):
        loss_fn(x, indices_tuple=torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="6 rows"):
        loss_fn(x, indices_tuple=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer tensor"):
        loss_fn(x, indices_tuple=torch.zeros(6))
    with pytest.raises(TypeError, match="integer tensor"):
        loss_fn(x, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    # With meta classes given, a batch smaller than K is fine.
    assert torch.isfinite(loss_fn(x[:2], indices_tuple=torch.tensor([0, 2])))
