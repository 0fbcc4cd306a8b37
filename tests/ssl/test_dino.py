"""DINO: multi-crop recipe, head, teacher and centre, schedules, training, exact resume, DDP."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricssl.augment.compose import MultiView
from metricssl.losses.dino_loss import DINOLoss
from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.dino import DINO, DINOHead, dino_heads, dino_views
from metricssl.ssl.method import Batch
from tests.gloo import check_half_batches_match_the_whole_batch

# The hyper-parameters proposed for the registry's tests (tiny heads for 8x8 images).
SMALL = {
    "proj_hidden_dim": 32,
    "proj_bottleneck_dim": 16,
    "output_dim": 64,
    "proj_batch_norm": True,
    "norm_last_layer": True,
    "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.04,
    "warmup_teacher_temp_steps": 0,
    "student_temp": 0.1,
    "center_momentum": 0.9,
    "momentum": 0.99,
    "final_momentum": 1.0,
    "freeze_last_layer_iters": 0,
}
HEAD_KEYS = ("proj_hidden_dim", "proj_bottleneck_dim", "proj_batch_norm", "norm_last_layer")


def tiny_images(n=32, seed=0, side=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8, generator=g)


def build(side=8, seed=0, n_local=2, **overrides):
    """DINO as the registry would build it: small_cnn, dino_heads, dino_views."""
    torch.manual_seed(seed)
    hp = {**SMALL, **overrides}
    backbone = SmallCNN(1, embedding_dim=32, width=8)
    return DINO(
        backbone,
        **dino_heads(backbone.num_features, hp),
        **{k: v for k, v in hp.items() if k not in HEAD_KEYS},
        feature_dim=backbone.num_features,
        views=dino_views(side, mean=[0.5], std=[0.3], n_local=n_local),
        input_shape=(1, side, side),
    )


def fixed_views(method, n=16, seed=1):
    return method.make_views(tiny_images(n), torch.Generator().manual_seed(seed))


def train(method, views, steps, lr=3e-3, total=None, opt=None):
    opt = opt or torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=lr)
    losses, outs = [], []
    for _ in range(steps):
        out = method.training_step(Batch(views))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(int(method.steps_done) + 1, total or steps)
        losses.append(float(out["loss"].detach()))
        outs.append({k: float(v.detach()) for k, v in out.items()})
    return losses, outs


def linear_backbone(side=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(side * side, 16))


def shape_free_backbone():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Flatten())


# -- recipe and head ----------------------------------------------------------------------------


@pytest.mark.parametrize("side, local", [(28, 12), (8, 4), (16, 7), (32, 14)])
def test_views_are_two_global_then_local_crops(side, local):
    recipe = dino_views(side, n_local=3)
    views = recipe(tiny_images(4, side=side))
    assert recipe.n_global == 2 and recipe.n_local == 3
    assert [v.shape[-1] for v in views] == [side, side, local, local, local]
    assert all(v.dtype == torch.float32 and v.shape[:2] == (4, 1) for v in views)
    assert len(dino_views(28)(tiny_images(2, side=28))) == 8  # 6 local crops by default


def test_views_run_through_the_small_cnn_at_8_and_28_pixels():
    for side, features in ((8, 128), (28, 512)):
        method = DINO(
            SmallCNN(1, pool_size=2 if side >= 16 else 1),
            DINOHead(features, 32, 16, output_dim=20),
            views=dino_views(side, n_local=2),
            input_shape=(1, side, side),
        )
        out = method.training_step(Batch(method.make_views(tiny_images(4, side=side))))
        assert torch.isfinite(out["loss"])


def test_head_is_mlp_bottleneck_normalised_weight_normalised_linear():
    torch.manual_seed(0)
    head = DINOHead(12, hidden_dim=20, bottleneck_dim=6, output_dim=9, num_layers=3)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 20), (20, 20), (20, 6)]
    assert any(isinstance(m, nn.GELU) for m in head.mlp)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.mlp)
    x = torch.randn(5, 12)
    z = F.normalize(head.mlp(x), dim=1)
    expected = z @ F.normalize(head.last_weight, dim=1).T
    torch.testing.assert_close(head(x), expected)
    # Scaling a row of the last layer changes nothing: only its direction counts.
    with torch.no_grad():
        head.last_weight[2] *= 7.0
    torch.testing.assert_close(head(x), expected)
    # With a learnt weight-norm scale g (norm_last_layer=False), g multiplies each row.
    free = DINOHead(12, 20, 6, output_dim=9, norm_last_layer=False, batch_norm=True)
    assert free.last_scale.shape == (9, 1) and torch.equal(free.last_scale, torch.ones(9, 1))
    with torch.no_grad():
        free.last_scale[4] = 3.0
    free.eval()
    z = F.normalize(free.mlp(x), dim=1)
    w = free.last_scale * F.normalize(free.last_weight, dim=1)
    torch.testing.assert_close(free(x), z @ w.T)
    assert DINOHead(12, 20, 6, output_dim=9, num_layers=1).mlp[0].in_features == 12
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        head(torch.randn(5, 11))


def test_last_layer_grad_zero_freezes_only_the_last_layer():
    torch.manual_seed(0)
    head = DINOHead(12, 20, 6, output_dim=9, norm_last_layer=False)
    x = torch.randn(5, 12)
    target = torch.randn(5, 9)

    def grads(scale):
        head.zero_grad()
        out = head(x, None if scale is None else torch.tensor(scale))
        (out * target).sum().backward()
        return out.detach(), {k: p.grad.clone() for k, p in head.named_parameters()}

    out_free, free = grads(None)
    out_frozen, frozen = grads(0.0)
    torch.testing.assert_close(out_frozen, out_free)
    assert frozen["last_weight"].abs().sum() == 0 and frozen["last_scale"].abs().sum() == 0
    assert free["last_weight"].abs().sum() > 0
    for name in free:
        if not name.startswith("last"):
            torch.testing.assert_close(frozen[name], free[name])
    _, live = grads(1.0)
    for name in free:
        torch.testing.assert_close(live[name], free[name])


# -- teacher, loss and centre -------------------------------------------------------------------


def test_teacher_is_a_frozen_copy_and_gets_no_gradient():
    method = build()
    for s, t in zip(method.backbone.parameters(), method.teacher_backbone.parameters()):
        assert torch.equal(s, t) and not t.requires_grad
    for s, t in zip(method.dino_head.parameters(), method.teacher_head.parameters()):
        assert torch.equal(s, t) and not t.requires_grad
    out = method.training_step(Batch(fixed_views(method)))
    out["loss"].backward()
    assert all(p.grad is None for p in method.teacher_backbone.parameters())
    assert all(p.grad is None for p in method.teacher_head.parameters())
    for name, p in [*method.backbone.named_parameters(), *method.dino_head.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not torch.is_tensor(v) or not v.requires_grad for k, v in out.items() if k != "loss")


def test_loss_is_dino_loss_of_student_crops_against_teacher_global_crops():
    # A backbone without BatchNorm, so each crop's output does not depend on the others'.
    torch.manual_seed(0)
    method = DINO(shape_free_backbone(), DINOHead(32, 24, 8, output_dim=12))
    g = torch.Generator().manual_seed(2)
    # Crops from different distributions, so that swapping any two changes the loss.
    views = [torch.randn(6, 1, 8, 8, generator=g) * (1 + 2 * i) + i for i in range(2)]
    views += [torch.randn(6, 1, 4, 4, generator=g) * (1 + i) - i for i in range(3)]
    # Make the teacher differ from the student, and the centre non-zero.
    with torch.no_grad():
        for p in method.teacher_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        method.criterion.center.normal_(std=0.1)  # small: the outputs are cosines
    center = method.criterion.center.clone()
    out = method.training_step(Batch(views))
    with torch.no_grad():
        student = [method.dino_head(method.backbone(v)) for v in views]
        teacher = [method.teacher_head(method.teacher_backbone(v)) for v in views[:2]]
    ref = DINOLoss(12).eval()
    ref.center.copy_(center)
    torch.testing.assert_close(out["loss"].detach(), ref(student, teacher), rtol=1e-5, atol=1e-6)
    # The centre moved by one EMA step of the teacher's global-crop mean.
    expected = 0.9 * center + 0.1 * torch.cat(teacher).mean(dim=0, keepdim=True)
    torch.testing.assert_close(method.criterion.center, expected)
    assert float(out["center_norm"]) == pytest.approx(float(expected.norm()), rel=1e-5)
    # The logged KL is the loss minus the teacher's entropy (every crop pairs the same way).
    probs = ref.teacher_probs(teacher)
    h = torch.cat(probs).mul(-torch.cat(probs).clamp_min(1e-30).log()).sum(1).mean()
    assert float(out["teacher_entropy"]) == pytest.approx(float(h), rel=1e-4)
    kl = (
        sum(
            F.kl_div(F.log_softmax(student[v] / 0.1, 1), probs[i], reduction="batchmean")
            for i in range(2)
            for v in range(5)
            if v != i
        )
        / 8
    )
    assert float(out["teacher_student_kl"]) == pytest.approx(float(kl), rel=1e-3, abs=1e-5)


def test_centre_follows_the_teacher_mean_over_steps():
    method = build(center_momentum=0.5)
    views = fixed_views(method, n=8)
    expected = torch.zeros_like(method.criterion.center)
    for _ in range(3):
        with torch.no_grad():
            t = method.teacher_head(method.teacher_backbone(torch.cat(views[:2])))
        expected = 0.5 * expected + 0.5 * t.mean(dim=0, keepdim=True)
        method.training_step(Batch(views))
        torch.testing.assert_close(method.criterion.center, expected, rtol=1e-4, atol=1e-6)


def test_collapsed_constant_output_shows_in_the_diagnostics():
    # A backbone whose output is the same for every image: the teacher rows are identical.
    torch.manual_seed(0)
    backbone = linear_backbone()
    nn.init.zeros_(backbone[1].weight)
    nn.init.constant_(backbone[1].bias, 0.3)
    method = DINO(backbone, DINOHead(16, 24, 8, output_dim=10), center_momentum=0.5)
    views = [torch.rand(8, 1, 8, 8) for _ in range(3)]
    first = method.training_step(Batch(views))
    # Uncentred, a constant output is one sharp distribution shared by every image.
    assert float(first["teacher_entropy"]) == pytest.approx(
        float(first["teacher_mean_entropy"]), abs=1e-5
    )
    for _ in range(30):
        out = method.training_step(Batch(views))
    # Centred, it becomes the uniform distribution: entropy log K, for rows and mean alike.
    assert float(out["teacher_entropy"]) == pytest.approx(math.log(10), abs=1e-3)
    assert float(out["teacher_mean_entropy"]) == pytest.approx(math.log(10), abs=1e-3)
    # A working network's teacher is sharper per image than on average.
    healthy = build().training_step(Batch(fixed_views(build())))
    assert float(healthy["teacher_entropy"]) < float(healthy["teacher_mean_entropy"]) - 0.5


# -- schedules ----------------------------------------------------------------------------------


def test_teacher_momentum_follows_the_cosine_schedule():
    method = build(momentum=0.9)
    assert method.current_momentum(0, 10) == pytest.approx(0.9)
    assert method.current_momentum(5, 10) == pytest.approx(0.95)
    assert method.current_momentum(10, 10) == pytest.approx(1.0)
    with torch.no_grad():
        for p in [*method.backbone.parameters(), *method.dino_head.parameters()]:
            p.add_(1.0)
    before = [
        p.clone()
        for p in [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]
    ]
    online = [*method.backbone.parameters(), *method.dino_head.parameters()]
    method.on_step_end(5, 10)
    after = [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]
    for b, t, o in zip(before, after, online):
        torch.testing.assert_close(t, 0.95 * b + 0.05 * o)
    assert int(method.steps_done) == 5


def test_teacher_temperature_warms_up_with_the_optimizer_steps():
    method = build(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=4)
    views = fixed_views(method, n=8)
    _, outs = train(method, views, 6, total=6)
    temps = [o["teacher_temp"] for o in outs]
    assert temps == pytest.approx([0.04, 0.0475, 0.055, 0.0625, 0.07, 0.07])
    assert method.teacher_temperature(2) == pytest.approx(0.055)
    assert float(method.teacher_temperature()) == pytest.approx(0.07)


def test_last_layer_is_frozen_for_the_first_iterations_only():
    method = build(freeze_last_layer_iters=3)
    views = fixed_views(method, n=8)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    start = method.dino_head.last_weight.detach().clone()
    mlp_start = method.dino_head.mlp[0].weight.detach().clone()
    train(method, views, 3, total=10, opt=opt)
    assert torch.equal(method.dino_head.last_weight, start)
    assert not torch.equal(method.dino_head.mlp[0].weight, mlp_start)
    train(method, views, 1, total=10, opt=opt)
    assert not torch.equal(method.dino_head.last_weight, start)


# -- training and resume ------------------------------------------------------------------------


def test_loss_falls_on_a_fixed_batch():
    # What tests/ssl/test_methods.py does for every registered method.
    method = build()
    views = fixed_views(method, n=32)
    losses, outs = train(method, views, 15)
    assert losses[-1] < losses[0], losses
    # The student's divergence from the teacher falls steadily (the loss also carries the
    # teacher's entropy, which the centring raises).
    kls = [o["teacher_student_kl"] for o in outs]
    assert kls[-1] < 0.7 * kls[0] and all(math.isfinite(x) for x in losses), kls


def test_without_a_teacher_update_or_centre_the_student_matches_the_teacher():
    # Teacher frozen (momentum 1) and centre frozen: a fixed target the student must fit.
    method = build(momentum=1.0, center_momentum=1.0)
    views = fixed_views(method, n=16)
    # Parameters only: the teacher's BatchNorm keeps its own running statistics.
    teacher = copy.deepcopy(dict(method.teacher_head.named_parameters()))
    losses, outs = train(method, views, 20, lr=1e-2)
    assert all(torch.equal(teacher[k], v) for k, v in method.teacher_head.named_parameters())
    assert losses[-1] < 0.8 * losses[0], losses
    assert outs[-1]["center_norm"] == 0.0


def test_state_dict_round_trip_resumes_exactly():
    kwargs = dict(freeze_last_layer_iters=3, warmup_teacher_temp_steps=4, teacher_temp=0.06)
    a = build(**kwargs)
    views = fixed_views(a, n=8)
    opt = torch.optim.SGD([p for p in a.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    train(a, views, 2, total=10, opt=opt)
    state, opt_state = copy.deepcopy(a.state_dict()), copy.deepcopy(opt.state_dict())
    assert {"criterion.center", "steps_done"} <= set(state)
    assert any(k.startswith("teacher_head.") for k in state)
    assert state["criterion.center"].abs().sum() > 0
    b = build(seed=123, **kwargs)
    b.load_state_dict(state)
    opt_b = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    opt_b.load_state_dict(opt_state)
    # Steps 3-5 cross the end of the freeze and of the temperature warmup.
    la, _ = train(a, views, 3, total=10, opt=opt)
    lb, _ = train(b, views, 3, total=10, opt=opt_b)
    assert la == lb
    assert torch.equal(a.criterion.center, b.criterion.center) and int(b.steps_done) == 5
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_the_trainer_runs_it_and_logs_the_diagnostics(tmp_path):
    from metricssl.ssl.trainer import Trainer

    method = build(freeze_last_layer_iters=2, warmup_teacher_temp_steps=3, teacher_temp=0.05)
    trainer = Trainer(
        method=method,
        dataset=(tiny_images(64), torch.arange(64) % 4),
        epochs=2,
        batch_size=16,
        steps_per_epoch=2,
        out=tmp_path / "run",
        progress=False,
        knn_k=5,
        amp="off",
    )
    trainer.fit()
    assert int(method.steps_done) == trainer.step == 4
    row = trainer.history[-1]
    keys = {"teacher_entropy", "teacher_mean_entropy", "teacher_student_kl", "center_norm"}
    assert keys | {"teacher_temp", "momentum"} <= set(row)
    assert 0 <= row["teacher_entropy"] <= math.log(64) and math.isfinite(row["loss"])
    # The epoch's mean over its steps 2 and 3 of the warmup 0.04 -> 0.05 over 3 steps.
    assert row["teacher_temp"] == pytest.approx((0.04 + 0.01 * 2 / 3 + 0.05) / 2)
    assert row["center_norm"] > 0


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_construction_errors():
    head = DINOHead(16, 24, 8, output_dim=10)
    for kwargs, error, match in [
        ({"teacher_temp": 0.0}, ValueError, "teacher_temp"),
        ({"warmup_teacher_temp": -1.0}, ValueError, "warmup_teacher_temp"),
        ({"student_temp": 0}, ValueError, "student_temp"),
        ({"warmup_teacher_temp_steps": -1}, ValueError, "warmup_teacher_temp_steps"),
        ({"center_momentum": 1.1}, ValueError, "center_momentum"),
        ({"momentum": 1.5}, ValueError, "momentum"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"momentum": 0.99, "final_momentum": 0.9}, ValueError, "final_momentum"),
        ({"freeze_last_layer_iters": -1}, ValueError, "freeze_last_layer_iters"),
        ({"freeze_last_layer_iters": 1.5}, TypeError, "freeze_last_layer_iters"),
        ({"output_dim": 0}, ValueError, "output_dim"),
        ({"output_dim": 12}, ValueError, "dino_head outputs 10"),
    ]:
        with pytest.raises(error, match=match):
            DINO(linear_backbone(), head, **kwargs)
    with pytest.raises(TypeError, match="dino_head"):
        DINO(linear_backbone(), "mlp")
    # Any head works when output_dim is given, but only a DINOHead can be frozen.
    plain = nn.Linear(16, 10)
    with pytest.raises(ValueError, match="output_dim must be given"):
        DINO(linear_backbone(), plain)
    # freeze_last_layer_iters=0: the default (200, the paper's frozen first epoch) needs a
    # DINOHead, as the next check says.
    plain_dino = DINO(linear_backbone(), plain, output_dim=10, freeze_last_layer_iters=0)
    assert plain_dino.criterion.output_dim == 10
    with pytest.raises(TypeError, match="needs a DINOHead"):
        DINO(linear_backbone(), plain, output_dim=10)
    with pytest.raises(TypeError, match="needs a DINOHead"):
        DINO(linear_backbone(), plain, output_dim=10, freeze_last_layer_iters=5)
    # The recipe's crops must fit the images: refused at construction, not at the first batch.
    with pytest.raises(ValueError, match=r"input_shape \(1, 16, 16\).*larger than the 16x16"):
        DINO(linear_backbone(), head, views=dino_views(28), input_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="at least 2 crops"):
        DINO(linear_backbone(), head, views=MultiView([dino_views(8).views[0]]))
    for name, value, error in [
        ("hidden_dim", 0, ValueError),
        ("bottleneck_dim", 2.0, TypeError),
        ("output_dim", 0, ValueError),
        ("num_layers", 0, ValueError),
        ("norm_last_layer", 1, TypeError),
        ("batch_norm", "no", TypeError),
    ]:
        with pytest.raises(error, match=name):
            DINOHead(16, **{name: value})
    with pytest.raises(ValueError, match="output_dim"):
        dino_heads(64, {**SMALL, "output_dim": 0})
    with pytest.raises(ValueError, match="n_local"):
        dino_views(28, n_local=-1)
    with pytest.raises(ValueError, match="local_size"):
        dino_views(8, local_size=10)


# -- torch.distributed --------------------------------------------------------------------------


def ddp_method():
    # No BatchNorm (per-rank statistics would differ from the whole batch's, correctly).
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    # center_momentum=0: the centre is the last (global) batch mean, a large effect.
    head = DINOHead(10, 12, 6, output_dim=7)
    return DINO(backbone, head, momentum=0.9, center_momentum=0.0).double()


def dino_center(method):
    return method.criterion.center.clone()


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    # Step 1 updates the centre from both ranks' teacher outputs; step 2's targets use it.
    center = check_half_batches_match_the_whole_batch(tmp_path, ddp_method, dino_center)
    assert center.abs().sum() > 0
