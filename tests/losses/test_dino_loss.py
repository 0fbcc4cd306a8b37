"""DINOLoss: the formula, the centre's moving average, the temperature schedule, diagnostics."""

import math

import pytest
import torch

from metricssl.losses.dino_loss import DINOLoss, entropy, teacher_temperature

pytestmark = pytest.mark.usefixtures("one_thread")


def outputs(n_crops, n=6, k=10, seed=0, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, k, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)
        for _ in range(n_crops)
    ]


def reference_loss(student, teacher, center, teacher_temp, student_temp):
    """The paper's pseudocode (Algorithm 1), written out one pair and one row at a time."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            rows = []
            for b in range(t.shape[0]):
                p_t = torch.exp((t[b] - center[0]) / teacher_temp)
                p_t = (p_t / p_t.sum()).detach()
                log_p_s = s[b] / student_temp - torch.logsumexp(s[b] / student_temp, dim=0)
                rows.append(-(p_t * log_p_s).sum())
            total = total + torch.stack(rows).mean()
            pairs += 1
    return total / pairs


# -- teacher temperature schedule ---------------------------------------------------------------


def test_teacher_temperature_warms_up_linearly_then_stays():
    def temp(step):
        return teacher_temperature(step, 30, 0.04, 0.07)

    assert temp(0) == pytest.approx(0.04)
    assert temp(15) == pytest.approx(0.055)
    assert temp(10) == pytest.approx(0.05)
    assert temp(30) == pytest.approx(0.07)
    assert temp(31) == pytest.approx(0.07) and temp(10_000) == pytest.approx(0.07)
    # No warmup: the final temperature from the start.
    assert teacher_temperature(0, 0, 0.04, 0.07) == 0.07
    # A step counter kept as a tensor gives the same numbers, as a tensor.
    for step in (0, 7, 15, 30, 45):
        got = teacher_temperature(torch.tensor(step), 30, 0.04, 0.07)
        assert torch.is_tensor(got) and got.ndim == 0
        assert float(got) == pytest.approx(temp(step), rel=1e-6)
    # Cooling down works the same way.
    assert teacher_temperature(5, 10, 0.1, 0.05) == pytest.approx(0.075)


def test_the_loss_uses_the_temperature_of_the_step():
    loss_fn = DINOLoss(
        10, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=20
    )
    assert loss_fn.teacher_temperature(10) == pytest.approx(0.055)
    student, teacher = outputs(3, seed=1), outputs(2, seed=2)
    loss_fn.eval()  # no centre update between the calls
    for step in (0, 10, 20, 100):
        ref = reference_loss(
            student, teacher, loss_fn.center, loss_fn.teacher_temperature(step), 0.1
        )
        torch.testing.assert_close(loss_fn(student, teacher, step=step), ref)
        torch.testing.assert_close(loss_fn(student, teacher, step=torch.tensor(step)), ref)


# -- the formula and its gradient ---------------------------------------------------------------


@pytest.mark.parametrize("n_teacher, n_student", [(2, 2), (2, 5), (1, 3)])
def test_loss_and_gradient_match_the_reference(n_teacher, n_student):
    loss_fn = DINOLoss(10, teacher_temp=0.05, student_temp=0.2, center_momentum=0.8)
    loss_fn.center.copy_(torch.linspace(-0.5, 0.5, 10).unsqueeze(0))
    student = outputs(n_student, seed=3, requires_grad=True)
    teacher = outputs(n_teacher, seed=4, requires_grad=True)
    center = loss_fn.center.clone()
    loss = loss_fn(student, teacher)
    loss.backward()
    # With one teacher crop, student crop 0 (the same global crop) is in no pair.
    grads = [None if s.grad is None else s.grad.clone() for s in student]
    assert (grads[0] is None) == (n_teacher == 1)
    for s in student:
        s.grad = None
    ref = reference_loss(student, teacher, center, 0.05, 0.2)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for g, s in zip(grads, student):
        if g is None:
            assert s.grad is None
        else:
            torch.testing.assert_close(g, s.grad)
    # The teacher is a target: no gradient reaches it.
    assert all(t.grad is None for t in teacher)


def test_loss_is_computed_in_float32_for_half_inputs():
    student, teacher = outputs(4, seed=5), outputs(2, seed=6)
    ref = DINOLoss(10)(student, teacher)
    half = DINOLoss(10)(
        [s.to(torch.bfloat16) for s in student], [t.to(torch.bfloat16) for t in teacher]
    )
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.double(), ref, atol=0.05, rtol=0.02)


# -- the centre ---------------------------------------------------------------------------------


def test_center_is_an_ema_of_the_teacher_batch_means():
    loss_fn = DINOLoss(10, center_momentum=0.9)
    assert torch.equal(loss_fn.center, torch.zeros(1, 10))
    t1, t2 = outputs(2, seed=7), outputs(2, n=4, seed=8)
    student = outputs(3, seed=9)
    loss_fn(student, [t.float() for t in t1])
    mean1 = torch.cat(t1).mean(dim=0)  # over both global crops and the batch
    expected = 0.1 * mean1
    torch.testing.assert_close(loss_fn.center[0], expected.float())
    loss_fn(outputs(3, n=4, seed=10), [t.float() for t in t2])
    expected = 0.9 * expected + 0.1 * torch.cat(t2).mean(dim=0)
    torch.testing.assert_close(loss_fn.center[0], expected.float())


def test_the_loss_uses_the_centre_before_the_update():
    loss_fn = DINOLoss(10)
    student, teacher = outputs(3, seed=11), [t.float() for t in outputs(2, seed=12)]
    student = [s.float() for s in student]
    ref = reference_loss(student, teacher, torch.zeros(1, 10), 0.04, 0.1)
    torch.testing.assert_close(loss_fn(student, teacher), ref)
    # The second call sees the updated centre.
    ref2 = reference_loss(student, teacher, loss_fn.center.clone(), 0.04, 0.1)
    torch.testing.assert_close(loss_fn(student, teacher), ref2)
    assert not torch.allclose(ref, ref2)


def test_eval_mode_leaves_the_centre_alone_and_momentum_one_freezes_it():
    loss_fn = DINOLoss(10).eval()
    loss_fn(outputs(3), outputs(2))
    assert torch.equal(loss_fn.center, torch.zeros(1, 10, dtype=loss_fn.center.dtype))
    frozen = DINOLoss(10, center_momentum=1.0)
    frozen(outputs(3), outputs(2))
    assert torch.equal(frozen.center, torch.zeros(1, 10))
    # Momentum 0: the centre is the last batch mean.
    follow = DINOLoss(10, center_momentum=0.0)
    teacher = outputs(2, seed=13)
    follow(outputs(3), teacher)
    torch.testing.assert_close(follow.center[0], torch.cat(teacher).mean(dim=0).float())


def test_state_dict_holds_the_centre_and_restores_the_next_loss():
    a = DINOLoss(10)
    for seed in range(3):
        a(outputs(3, seed=seed), outputs(2, seed=seed + 10))
    assert set(a.state_dict()) == {"center"}
    b = DINOLoss(10)
    b.load_state_dict(a.state_dict())
    student, teacher = outputs(4, seed=20), outputs(2, seed=21)
    assert torch.equal(a(student, teacher), b(student, teacher))
    assert torch.equal(a.center, b.center)


# -- collapse diagnostics -----------------------------------------------------------------------


def test_entropy_of_one_hot_and_uniform_rows():
    k = 8
    torch.testing.assert_close(entropy(torch.eye(k)), torch.zeros(k))
    torch.testing.assert_close(entropy(torch.full((3, k), 1 / k)), torch.full((3,), math.log(k)))


def test_statistics_tell_the_two_collapse_modes_from_a_healthy_teacher():
    k, n = 16, 32
    loss_fn = DINOLoss(k)
    # Healthy: every row confident, different rows on different dimensions.
    healthy = torch.eye(k).repeat(2, 1)[:n] * 2.0
    stats = loss_fn.statistics(loss_fn.teacher_probs([healthy]))
    assert stats["teacher_entropy"] < 0.01
    assert stats["teacher_mean_entropy"] == pytest.approx(math.log(k), abs=0.01)
    # Collapse to one dimension: the same (constant) output for every image, one entry large.
    constant = torch.zeros(n, k)
    constant[:, 3] = 2.0
    stats = loss_fn.statistics(loss_fn.teacher_probs([constant, constant]))
    assert stats["teacher_entropy"] < 0.01 and stats["teacher_mean_entropy"] < 0.01
    # Centring a constant output drives it to uniform: both entropies reach log K.
    for _ in range(200):
        loss_fn.update_center([constant, constant])
    stats = loss_fn.statistics(loss_fn.teacher_probs([constant]))
    assert stats["teacher_entropy"] == pytest.approx(math.log(k), abs=1e-3)
    assert stats["teacher_mean_entropy"] == pytest.approx(math.log(k), abs=1e-3)
    # A random teacher lies in between, with a per-row entropy below the mean's.
    stats = DINOLoss(k).statistics(DINOLoss(k).teacher_probs(outputs(2, n=n, k=k)))
    assert 0 < stats["teacher_entropy"] < stats["teacher_mean_entropy"] <= math.log(k)


# -- errors -------------------------------------------------------------------------------------


def test_construction_errors_name_the_argument():
    for kwargs, error, match in [
        ({"output_dim": 0}, ValueError, "output_dim"),
        ({"output_dim": 4.0}, TypeError, "output_dim"),
        ({"teacher_temp": 0.0}, ValueError, "teacher_temp"),
        ({"warmup_teacher_temp": -0.1}, ValueError, "warmup_teacher_temp"),
        ({"student_temp": 0}, ValueError, "student_temp"),
        ({"warmup_teacher_temp_steps": -1}, ValueError, "warmup_teacher_temp_steps"),
        ({"warmup_teacher_temp_steps": 2.5}, TypeError, "warmup_teacher_temp_steps"),
        ({"center_momentum": 1.5}, ValueError, "center_momentum"),
        ({"center_momentum": -0.1}, ValueError, "center_momentum"),
    ]:
        with pytest.raises(error, match=match):
            DINOLoss(**{"output_dim": 10, **kwargs})


def test_call_errors():
    loss_fn = DINOLoss(10)
    with pytest.raises(TypeError, match="sequence"):
        loss_fn(torch.randn(4, 10), outputs(2))
    with pytest.raises(ValueError, match=r"teacher_outputs\[0\] has 8 dimensions"):
        loss_fn(outputs(3), outputs(2, k=8))
    with pytest.raises(ValueError, match="at least one other crop"):
        loss_fn(outputs(1), outputs(1))
    with pytest.raises(ValueError, match="at least one other crop"):
        loss_fn(outputs(2), outputs(3))
    with pytest.raises(ValueError, match="same batch"):
        loss_fn(outputs(3, n=5), outputs(2, n=6))
    with pytest.raises(ValueError, match=r"student_outputs\[1\] has shape"):
        loss_fn(outputs(1, n=6) + outputs(1, n=5), outputs(1, n=6))
    with pytest.raises(ValueError, match="at least 1 crop"):
        loss_fn(outputs(2), [])
    with pytest.raises(ValueError, match="empty"):
        loss_fn(outputs(3, n=0), outputs(2, n=0))
