import math

import pytest
import torch
import torch.nn.functional as F

from metricssl.losses import DCLLoss, DCLWLoss, NTXentLoss


def reference(z1, z2, temperature, sigma=None):
    """The paper's loss written out anchor by anchor with Python sums (float64 inputs)."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    if sigma is None:
        weights = [1.0] * n
    else:
        e = [math.exp(float(z1[i] @ z2[i]) / sigma) for i in range(n)]
        weights = [2 - e[i] / (sum(e) / n) for i in range(n)]
    total = 0.0
    for a, b in ((z1, z2), (z2, z1)):
        for i in range(n):
            negatives = [
                float(a[i] @ v[k]) / temperature for v in (a, b) for k in range(n) if k != i
            ]
            positive = float(a[i] @ b[i]) / temperature
            total += -weights[i] * positive + math.log(sum(math.exp(s) for s in negatives))
    return total / (2 * n)


def views(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2))


def test_dcl_matches_the_papers_formula():
    z1, z2 = views()
    got = DCLLoss(temperature=0.2)(z1, z2)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(reference(z1, z2, 0.2), rel=1e-10)


def test_dclw_matches_the_papers_formula():
    z1, z2 = views(seed=1)
    got = DCLWLoss(temperature=0.3, sigma=0.5)(z1, z2)
    assert got.item() == pytest.approx(reference(z1, z2, 0.3, sigma=0.5), rel=1e-10)


def test_dcl_is_ntxent_without_the_positive_in_the_denominator():
    z1, z2 = views(seed=2)
    ids = torch.arange(6)
    ntxent = NTXentLoss(temperature=0.5)(torch.cat([z1, z2]), torch.cat([ids, ids]))
    # Per anchor, NT-Xent = log(e^p + N) - p and DCL = log(N) - p: DCL is smaller.
    assert DCLLoss(temperature=0.5)(z1, z2) < ntxent


def test_gradients_match_autograd_of_a_direct_formula_including_the_weights():
    z1, z2 = (z.requires_grad_() for z in views(seed=3))
    DCLWLoss(temperature=0.2, sigma=0.5)(z1, z2).backward()
    got = z1.grad.clone(), z2.grad.clone()

    a, b = (z.detach().clone().requires_grad_() for z in (z1, z2))
    u, v = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n = u.shape[0]
    w = 2 - n * torch.softmax((u * v).sum(1) / 0.5, dim=0)
    eye = torch.eye(n, dtype=torch.bool)
    loss = 0
    for p, q in ((u, v), (v, u)):
        negatives = torch.cat([p @ p.T, p @ q.T], dim=1) / 0.2
        negatives = negatives.masked_fill(torch.cat([eye, eye], dim=1), float("-inf"))
        loss = loss + (-w * (p * q).sum(1) / 0.2 + torch.logsumexp(negatives, dim=1)).mean()
    (loss / 2).backward()
    torch.testing.assert_close(got, (a.grad, b.grad))


def test_half_precision_and_autocast():
    z1, z2 = (z.float() for z in views(seed=4))
    want = DCLWLoss()(z1, z2)
    half = DCLWLoss()(z1.bfloat16(), z2.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), want, atol=0.1, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(DCLWLoss()(z1, z2), want)


def test_call_forms_and_bad_arguments():
    z1, z2 = views()
    loss_fn = DCLLoss()
    torch.testing.assert_close(loss_fn(z1, z2), loss_fn(z1, ref_emb=z2))
    with pytest.raises(ValueError, match="second view"):
        loss_fn(z1)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(z1, z2[:3])
    with pytest.raises(ValueError, match="at least 2 inputs"):
        loss_fn(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="temperature"):
        DCLLoss(temperature=0)
    with pytest.raises(ValueError, match="sigma"):
        DCLWLoss(sigma=-1.0)
    with pytest.raises(TypeError, match="gather_distributed"):
        DCLLoss(gather_distributed="yes")


def _gathered_worker(rank, out_dir, loss_cls):
    z1, z2 = views(n=8, seed=5)
    half = slice(rank * 4, (rank + 1) * 4)
    a, b = z1[half].clone().requires_grad_(), z2[half].clone().requires_grad_()
    loss = loss_cls(temperature=0.2, gather_distributed=True)(a, b)
    loss.backward()
    torch.save({"loss": loss.detach(), "grads": (a.grad, b.grad)}, out_dir / f"rank{rank}.pt")


@pytest.mark.parametrize("loss_cls", [DCLLoss, DCLWLoss])
def test_two_ranks_with_gathered_negatives_match_one_process(tmp_path, loss_cls):
    from tests.gloo import WORLD, run_ranks

    run_ranks(_gathered_worker, tmp_path, tmp_path, loss_cls)
    z1, z2 = (z.requires_grad_() for z in views(n=8, seed=5))
    loss = loss_cls(temperature=0.2)(z1, z2)
    loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, loss.detach())
    # Each rank's gradient is WORLD times its rows' share (DDP divides by WORLD).
    for i, z in enumerate((z1, z2)):
        torch.testing.assert_close(torch.cat([r["grads"][i] for r in ranks]) / WORLD, z.grad)
