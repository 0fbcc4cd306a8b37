"""SwAVLoss and sinkhorn: equipartitioned codes, the paper's algorithm, the loss formula, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from metricssl.losses.swav_loss import SwAVLoss, sinkhorn


def scores(n, k, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g, dtype=torch.float64).tanh().to(dtype)


def paper_sinkhorn(out, epsilon, iterations):
    """The paper's code (main_swav.py, one process), directly in the exp domain."""
    q = torch.exp(out / epsilon).t()  # K x B
    b, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


@pytest.mark.parametrize("n, k", [(2, 2), (8, 4), (32, 10), (5, 50), (64, 128)])
def test_sinkhorn_is_doubly_stochastic(n, k):
    s = scores(n, k, seed=n + k)
    q = sinkhorn(s, epsilon=0.05, iterations=300)
    assert q.shape == (n, k) and q.dtype == torch.float32 and (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n))
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), n / k), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("n, k", [(8, 4), (32, 10), (5, 50)])
@pytest.mark.parametrize("iterations", [1, 3, 7])
def test_sinkhorn_matches_the_papers_algorithm(n, k, iterations):
    s = scores(n, k, seed=3 * n + k, dtype=torch.float64)
    ours = sinkhorn(s, epsilon=0.05, iterations=iterations)
    torch.testing.assert_close(ours, paper_sinkhorn(s, 0.05, iterations))
    # Rows are exact after any number of iterations; columns approach n / k.
    torch.testing.assert_close(ours.sum(dim=1), torch.ones(n, dtype=torch.float64))


def test_sinkhorn_balances_more_with_each_iteration():
    s = scores(64, 16, seed=5)
    errors = [
        (sinkhorn(s, iterations=it).sum(dim=0) - 4).abs().max().item() for it in (1, 3, 10, 30)
    ]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.05 < errors[0], errors
    # Three iterations already spread the mass far more evenly than a plain softmax does.
    softmax = torch.softmax(s / 0.05, dim=1).sum(dim=0)
    assert errors[1] < (softmax - 4).abs().max().item() / 2


def test_sinkhorn_is_stable_on_a_skewed_score_matrix():
    # Every sample scores prototype 0 far above the others, at a scale where exp(score / eps)
    # overflows float32: the equipartition must still spread the samples out.
    g = torch.Generator().manual_seed(0)
    s = torch.rand(40, 8, generator=g)
    s[:, 0] += 50.0
    with torch.no_grad():
        assert not torch.isfinite(paper_sinkhorn(s, 0.05, 3)).all()  # the naive form fails
    q = sinkhorn(s, epsilon=0.05, iterations=3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(40))
    # After the paper's 3 iterations every prototype holds 4 to 6 of the 40 samples' mass ...
    assert ((q.sum(dim=0) - 5.0).abs() < 1.2).all() and len(q.argmax(dim=1).unique()) == 8
    # ... and the columns converge to 40 / 8 with more.
    q = sinkhorn(s, epsilon=0.05, iterations=100)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(40))
    torch.testing.assert_close(q.sum(dim=0), torch.full((8,), 5.0), atol=1e-3, rtol=1e-3)
    # Skewed within the batch too: half the samples near prototype 1, with a tiny epsilon.
    s2 = torch.full((40, 8), -1.0)
    s2[:20, 1] = 1.0
    s2 += 0.01 * torch.rand(40, 8, generator=g)
    q2 = sinkhorn(s2, epsilon=0.001, iterations=50)
    assert torch.isfinite(q2).all()
    torch.testing.assert_close(q2.sum(dim=1), torch.ones(40))
    torch.testing.assert_close(q2.sum(dim=0), torch.full((8,), 5.0), atol=1e-2, rtol=1e-2)


def test_sinkhorn_has_no_gradient_and_keeps_the_dtype():
    s = scores(16, 6).requires_grad_()
    assert not sinkhorn(s).requires_grad
    half = sinkhorn(scores(16, 6, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()
    torch.testing.assert_close(half.float().sum(dim=1), torch.ones(16), atol=2e-2, rtol=0)


def reference_loss(global_scores, local_scores, temperature, epsilon, iterations, queues=None):
    """SwAV's loss written out as in the paper's training loop, in the exp domain."""
    crops = list(global_scores) + list(local_scores)
    n = crops[0].shape[0]
    total = 0.0
    for i, s in enumerate(global_scores):
        out = s.detach()
        if queues is not None and queues[i] is not None:
            out = torch.cat([queues[i], out])  # the paper puts the queue first
        q = paper_sinkhorn(out, epsilon, iterations)[-n:]
        sub = 0.0
        for v, x in enumerate(crops):
            if v != i:
                sub = sub - torch.mean(torch.sum(q * F.log_softmax(x / temperature, dim=1), dim=1))
        total = total + sub / (len(crops) - 1)
    return total / len(global_scores)


@pytest.mark.parametrize("n_local", [0, 1, 4])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_loss_matches_the_reference_in_value_and_gradient(n_local, temperature):
    k = 12
    g = [scores(10, k, seed=i, dtype=torch.float64).requires_grad_() for i in range(2)]
    loc = [scores(10, k, seed=10 + i, dtype=torch.float64).requires_grad_() for i in range(n_local)]
    loss_fn = SwAVLoss(temperature=temperature, sinkhorn_epsilon=0.05, sinkhorn_iterations=3)
    ours = loss_fn(g, loc)
    grads = torch.autograd.grad(ours, g + loc)
    ref = reference_loss(g, loc, temperature, 0.05, 3)
    ref_grads = torch.autograd.grad(ref, g + loc)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_queue_only_enters_the_codes():
    k = 8
    g = [scores(6, k, seed=i, dtype=torch.float64).requires_grad_() for i in range(2)]
    loc = [scores(6, k, seed=20, dtype=torch.float64).requires_grad_()]
    queues = [scores(30, k, seed=40 + i, dtype=torch.float64).requires_grad_() for i in range(2)]
    loss_fn = SwAVLoss(temperature=0.1)
    with_queue = loss_fn(g, loc, queue_scores=queues)
    torch.testing.assert_close(with_queue, reference_loss(g, loc, 0.1, 0.05, 3, queues))
    assert not torch.allclose(with_queue, loss_fn(g, loc))
    with_queue.backward()
    assert all(q.grad is None for q in queues)
    # The codes are the batch rows of Sinkhorn over batch + queue (row order is irrelevant).
    codes = loss_fn.codes(g, queues)
    expected = sinkhorn(torch.cat([g[0], queues[0]]).detach())[:6]
    torch.testing.assert_close(codes[0], expected)
    # An empty queue or None for one crop is the same as no queue for it.
    empty = [g[0].new_zeros(0, k), None]
    torch.testing.assert_close(loss_fn(g, loc, queue_scores=empty), loss_fn(g, loc))


def test_codes_are_targets_without_gradient():
    g = [scores(8, 5, seed=i).requires_grad_() for i in range(2)]
    codes = SwAVLoss().codes(g)
    assert len(codes) == 2 and not any(c.requires_grad for c in codes)


def test_loss_under_bfloat16_autocast_is_finite_and_close():
    g = [scores(16, 10, seed=i) for i in range(2)]
    loc = [scores(16, 10, seed=5)]
    loss_fn = SwAVLoss()
    full = loss_fn(g, loc)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = loss_fn([s.bfloat16() for s in g], [s.bfloat16() for s in loc])
    assert half.dtype == torch.bfloat16
    assert math.isclose(float(half), float(full), rel_tol=0.05)


def test_errors():
    s = [scores(4, 3, seed=i) for i in range(2)]
    for kwargs, match in [
        ({"temperature": 0}, "temperature"),
        ({"sinkhorn_epsilon": -1.0}, "sinkhorn_epsilon"),
        ({"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
        ({"sinkhorn_iterations": 2.5}, "sinkhorn_iterations"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            SwAVLoss(**kwargs)
    with pytest.raises(TypeError, match="gather_distributed"):
        SwAVLoss(gather_distributed=1)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(s[0], epsilon=0.0)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(s[0], iterations=0)
    with pytest.raises(ValueError, match="scores"):
        sinkhorn(torch.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        sinkhorn(torch.zeros(0, 3))
    loss_fn = SwAVLoss()
    with pytest.raises(ValueError, match="at least 2 crops"):
        loss_fn(s[:1])
    with pytest.raises(TypeError, match="sequence"):
        loss_fn(s[0])
    with pytest.raises(ValueError, match="same batch"):
        loss_fn(s, [scores(5, 3)])
    with pytest.raises(ValueError, match="one tensor"):
        loss_fn(s, queue_scores=[scores(4, 3)])
    with pytest.raises(ValueError, match="prototypes"):
        loss_fn(s, queue_scores=[scores(4, 5), None])
    with pytest.raises(ValueError, match=r"codes\[0\]"):
        loss_fn.swapped_prediction(s, [torch.zeros(4, 2)])
