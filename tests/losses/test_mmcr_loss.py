"""MMCRLoss: the paper's formula (nuclear norms through eigenvalues), gradients, errors."""

import pytest
import torch

from metricssl.losses import MMCRLoss


def views(b=6, k=3, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, d, generator=g, dtype=dtype)


def nuclear_norm(m):
    """Sum of singular values as the square roots of the eigenvalues of the smaller Gram."""
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return torch.linalg.eigvalsh(gram).clamp_min(0).sqrt().sum()


def hand_mmcr(z, lmda):
    b, k, _ = z.shape
    unit = [[z[i, v] / z[i, v].norm() for v in range(k)] for i in range(b)]
    centroids = torch.stack([sum(rows) / k for rows in unit])
    local = sum(nuclear_norm(torch.stack(rows)) for rows in unit) / b
    return -nuclear_norm(centroids) + lmda * local


@pytest.mark.parametrize("shape", [(6, 3, 5), (4, 2, 16), (9, 4, 3), (1, 5, 4)])
@pytest.mark.parametrize("lmda", [0.0, 5e-3, 0.5])
def test_value_matches_the_formula(shape, lmda):
    z = views(*shape, seed=sum(shape))
    torch.testing.assert_close(MMCRLoss(lmda=lmda)(z), hand_mmcr(z, lmda))


def test_momentum_views_join_the_online_ones():
    online, momentum = views(seed=1), views(seed=2)
    joined = torch.cat([online, momentum], dim=1)
    loss_fn = MMCRLoss(lmda=0.1)
    torch.testing.assert_close(loss_fn(online, momentum), hand_mmcr(joined, 0.1))


def test_gradients_match_finite_differences():
    z = views(5, 3, 4, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: MMCRLoss(lmda=0.2)(x), (z,))
    online, momentum = views(4, 2, 6, seed=4).requires_grad_(), views(4, 2, 6, seed=5)
    assert torch.autograd.gradcheck(lambda x: MMCRLoss()(x, momentum), (online,))


def test_invariant_views_of_orthogonal_images_reach_minus_batch_size():
    # Every centroid is a unit vector, all orthogonal: the singular values are all 1.
    basis = torch.eye(4, dtype=torch.float64)[:3]
    z = basis[:, None, :].expand(3, 5, 4) * torch.arange(1.0, 6.0, dtype=torch.float64)[:, None]
    torch.testing.assert_close(MMCRLoss()(z), torch.tensor(-3.0, dtype=torch.float64))
    # The same images with disagreeing views score worse.
    assert MMCRLoss()(views(3, 5, 4)) > -3.0


def test_half_precision_follows_float32():
    z = views(16, 4, 8, seed=6, dtype=torch.float32)
    half = MMCRLoss(lmda=0.1)(z.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), MMCRLoss(lmda=0.1)(z), atol=0.05, rtol=0.02)


def test_gather_distributed_without_a_group_is_one_process():
    z = views(seed=7)
    torch.testing.assert_close(MMCRLoss(gather_distributed=True)(z), MMCRLoss()(z))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lmda=-1.0), "lmda"),
        (dict(gather_distributed="yes"), "gather_distributed"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        MMCRLoss(**kwargs)


def test_bad_inputs_are_refused_by_name():
    loss_fn = MMCRLoss()
    z = views()
    with pytest.raises(ValueError, match=r"online must be a 3D tensor"):
        loss_fn(z[:, 0])
    with pytest.raises(ValueError, match=r"online must be a 3D tensor"):
        loss_fn(z[:, :0])
    with pytest.raises(ValueError, match="online is empty"):
        loss_fn(z[:0])
    with pytest.raises(TypeError, match="online must be a floating-point"):
        loss_fn(z.long())
    with pytest.raises(TypeError, match="online must be a torch.Tensor"):
        loss_fn(z.tolist())
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(z, z[:, :2])
    with pytest.raises(ValueError, match=r"momentum must be a 3D tensor"):
        loss_fn(z, z[:, 0])
    with pytest.raises(TypeError, match="momentum is torch.float32"):
        loss_fn(z, z.float())
