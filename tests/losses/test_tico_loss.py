"""TiCoLoss: the paper's formula over several steps, the running covariance, gradients, errors."""

import pytest
import torch

from metricssl.losses import TiCoLoss


def views(n=12, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


def hand_tico(z_a, z_b, C, beta, rho):
    """TiCo written out row by row: (loss, new C)."""
    n, d = z_a.shape
    a = [z_a[i] / z_a[i].norm() for i in range(n)]
    b = [z_b[i] / z_b[i].norm() for i in range(n)]
    batch_cov = sum(torch.outer(x.detach(), x.detach()) for x in a) / n
    new_C = beta * C + (1 - beta) * batch_cov
    invariance = 1 - sum(torch.dot(a[i], b[i]) for i in range(n)) / n
    contrast = sum(a[i] @ new_C @ a[i] for i in range(n)) / n
    return invariance + rho * contrast, new_C


@pytest.mark.parametrize("beta, rho", [(0.9, 8.0), (0.5, 20.0), (0.0, 1.0), (1.0, 3.0)])
def test_three_steps_match_the_formula_and_carry_the_covariance(beta, rho):
    loss_fn = TiCoLoss(beta=beta, rho=rho)
    C = torch.zeros(6, 6, dtype=torch.float64)
    for step in range(3):
        z_a, z_b = views(seed=step)
        expected, C = hand_tico(z_a, z_b, C, beta, rho)
        torch.testing.assert_close(loss_fn(z_a, z_b), expected)
        torch.testing.assert_close(loss_fn.C, C)


def test_gradients_match_the_formula_and_the_covariance_carries_none():
    z_a, z_b = views(seed=3)
    ours = [t.clone().requires_grad_() for t in (z_a, z_b)]
    ref = [t.clone().requires_grad_() for t in (z_a, z_b)]
    loss_fn = TiCoLoss()
    loss_fn(*views(seed=4))  # a non-zero C from an earlier batch
    C = loss_fn.C.clone()
    loss_fn(*ours).backward()
    hand_tico(*ref, C, 0.9, 8.0)[0].backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)
    assert not loss_fn.C.requires_grad


def test_update_covariance_matrix_false_keeps_C():
    loss_fn = TiCoLoss()
    loss_fn(*views(seed=0))
    C = loss_fn.C.clone()
    first = loss_fn(*views(seed=1), update_covariance_matrix=False)
    torch.testing.assert_close(loss_fn.C, C)
    # The loss still used the updated C; calling again gives the same value.
    torch.testing.assert_close(loss_fn(*views(seed=1), update_covariance_matrix=False), first)


def test_the_loss_is_scale_invariant_and_lightly_valued_at_collapse():
    z_a, z_b = views(seed=5)
    a, b = TiCoLoss(), TiCoLoss()
    torch.testing.assert_close(a(z_a, z_b), b(3.0 * z_a, 0.5 * z_b))
    # Identical constant rows: invariance 0, C = (1 - beta) z z^T, contrast (1 - beta).
    same = torch.ones(4, 3, dtype=torch.float64)
    torch.testing.assert_close(
        TiCoLoss(rho=2.0)(same, same), torch.tensor(0.2, dtype=torch.float64)
    )


def test_state_dict_resumes_into_a_fresh_loss():
    loss_fn = TiCoLoss()
    for seed in range(2):
        loss_fn(*views(seed=seed))
    fresh = TiCoLoss()
    assert fresh.C.shape == (0, 0)
    fresh.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(fresh.C, loss_fn.C)
    z = views(seed=9)
    torch.testing.assert_close(fresh(*z), loss_fn(*z))


def test_half_precision_follows_float32():
    z_a, z_b = views(32, 16, seed=6, dtype=torch.float32)
    full = TiCoLoss()(z_a, z_b)
    half = TiCoLoss()(z_a.bfloat16(), z_b.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), full, atol=0.05, rtol=0.02)


def test_gather_distributed_without_a_group_is_one_process():
    z = views(seed=7)
    torch.testing.assert_close(TiCoLoss(gather_distributed=True)(*z), TiCoLoss()(*z))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=1.5), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(rho=-1.0), "rho"),
        (dict(rho=float("nan")), "rho"),
        (dict(gather_distributed=1), "gather_distributed"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TiCoLoss(**kwargs)


def test_bad_inputs_are_refused_by_name():
    loss_fn = TiCoLoss()
    z_a, z_b = views()
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(z_a, z_b[:-1])
    with pytest.raises(ValueError, match="z_a"):
        loss_fn(z_a[0], z_b[0])
    with pytest.raises(TypeError, match="z_b"):
        loss_fn(z_a, z_b.long())
    with pytest.raises(ValueError, match="at least 2 rows"):
        loss_fn(z_a[:1], z_b[:1])
    with pytest.raises(TypeError, match="update_covariance_matrix"):
        loss_fn(z_a, z_b, update_covariance_matrix=None)
    loss_fn(z_a, z_b)
    with pytest.raises(ValueError, match="covariance matrix C was built for 6"):
        loss_fn(z_a[:, :4], z_b[:, :4])
