"""SwAV: multi-crop recipe, frozen prototypes, queue, training, exact resume, DDP, errors."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricssl.augment.compose import MultiView
from metricssl.losses.swav_loss import SwAVLoss, sinkhorn
from metricssl.models.heads import PrototypesHead
from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.method import Batch
from metricssl.ssl.swav import SwAV, check_num_prototypes, swav_heads, swav_views
from tests.gloo import check_half_batches_match_the_whole_batch

# The hyper-parameters proposed for the registry (tiny heads for 8x8 images).
SMALL = {
    "proj_hidden_dim": 32,
    "proj_output_dim": 16,
    "num_prototypes": 8,
    "temperature": 0.1,
    "sinkhorn_epsilon": 0.05,
    "sinkhorn_iterations": 3,
    "freeze_prototypes_iters": 2,
    "queue_length": 0,
    "queue_start_step": 0,
}
ARGS = (
    "temperature",
    "sinkhorn_epsilon",
    "sinkhorn_iterations",
    "freeze_prototypes_iters",
    "queue_length",
    "queue_start_step",
)


def tiny_images(n=32, seed=0, side=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8, generator=g)


def build(side=8, seed=0, **overrides):
    """SwAV as the registry would build it: small_cnn, swav_heads, swav_views."""
    torch.manual_seed(seed)
    hp = {**SMALL, **overrides}
    backbone = SmallCNN(1, embedding_dim=32, width=8)
    heads = swav_heads(backbone.num_features, hp)
    return SwAV(
        backbone,
        **heads,
        **{k: hp[k] for k in ARGS},
        feature_dim=backbone.num_features,
        views=swav_views(side, mean=[0.5], std=[0.3], n_local=2),
        input_shape=(1, side, side),
    )


def fixed_views(method, n=16, seed=1):
    return method.make_views(tiny_images(n), torch.Generator().manual_seed(seed))


def train(method, views, steps, lr=3e-3, weight_decay=0.0, total=None):
    opt = torch.optim.AdamW(method.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(steps):
        out = method.training_step(Batch(views))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(int(method.steps_done) + 1, total or steps)
        losses.append(float(out["loss"].detach()))
    return losses, out


# -- recipe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("side, local", [(28, 14), (8, 4), (32, 16)])
def test_views_are_two_global_then_local_crops(side, local):
    recipe = swav_views(side, n_local=3)
    views = recipe(tiny_images(4, side=side), torch.Generator().manual_seed(0))
    assert [v.shape[-1] for v in views] == [side, side, local, local, local]
    assert all(v.dtype == torch.float32 for v in views)
    assert recipe.n_global == 2 and recipe.n_local == 3
    # Options reach multi_crop; crops larger than the image are refused there.
    assert len(swav_views(28, n_local=0, flip_p=0.0).views) == 2
    with pytest.raises(ValueError, match="larger than image_size"):
        swav_views(16, global_size=20)


def test_views_run_through_the_small_cnn_at_8_and_28_pixels():
    for side in (8, 28):
        method = build(side=side)
        views = method.make_views(tiny_images(4, side=side))
        out = method.training_step(Batch(views))
        assert torch.isfinite(out["loss"])


# -- the loss ------------------------------------------------------------------------------------


def test_loss_is_swav_loss_of_the_prototype_scores():
    method = build()
    views = fixed_views(method, n=8)
    out = method.training_step(Batch(views))
    with torch.no_grad():
        z = F.normalize(
            method.projection_head(
                torch.cat(
                    [method.backbone(torch.cat(views[:2])), method.backbone(torch.cat(views[2:]))]
                )
            ),
            dim=1,
        )
        w = F.normalize(method.prototype_head.weight, dim=1)
        s = (z @ w.T).split(8)
    expected = SwAVLoss(0.1, 0.05, 3)(s[:2], s[2:])
    torch.testing.assert_close(out["loss"].detach(), expected)
    # Logged diagnostics are in range.
    assert 0 <= float(out["code_entropy"]) <= math.log(8) + 1e-5
    assert 0 < float(out["prototypes_used"]) <= 1


def test_prototypes_are_unit_vectors_before_every_step():
    method = build()
    with torch.no_grad():
        method.prototype_head.weight.mul_(3.0)
    views = fixed_views(method, n=8)
    method.training_step(Batch(views))
    norms = method.prototype_head.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(8))
    train(method, views, 3, lr=0.1, weight_decay=0.5)
    torch.testing.assert_close(method.prototype_head.weight.norm(dim=1), torch.ones(8))


# -- freezing ------------------------------------------------------------------------------------


def test_prototypes_are_frozen_for_the_first_iterations_only():
    method = build(freeze_prototypes_iters=3)
    views = fixed_views(method)
    start = method.prototype_head.weight.detach().clone()
    backbone_start = [p.detach().clone() for p in method.backbone.parameters()]
    # Weight decay shrinks even a zero-gradient parameter: the renormalisation undoes it.
    opt = torch.optim.AdamW(method.parameters(), lr=1e-2, weight_decay=0.1)
    for step in range(1, 6):
        out = method.training_step(Batch(views))
        opt.zero_grad()
        out["loss"].backward()
        grad = method.prototype_head.weight.grad
        assert grad is not None and (grad.abs().max() == 0) == (step <= 3)
        opt.step()
        method.on_step_end(step, 5)
        if step <= 3:
            torch.testing.assert_close(method.prototype_head.weight, start, rtol=0, atol=1e-6)
    assert not torch.allclose(method.prototype_head.weight, start, atol=1e-3)
    moved = [not torch.equal(a, b) for a, b in zip(backbone_start, method.backbone.parameters())]
    assert any(moved)


def test_frozen_prototypes_still_pass_the_same_gradient_to_the_rest():
    frozen, free = build(freeze_prototypes_iters=5), build(freeze_prototypes_iters=0)
    views = fixed_views(frozen, n=8)
    a, b = frozen.training_step(Batch(views)), free.training_step(Batch(views))
    torch.testing.assert_close(a["loss"], b["loss"])
    a["loss"].backward()
    b["loss"].backward()
    for p, q in zip(frozen.projection_head.parameters(), free.projection_head.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


# -- queue ---------------------------------------------------------------------------------------


def test_queue_is_a_ring_of_the_latest_global_projections():
    method = build(queue_length=20, freeze_prototypes_iters=0)
    method.eval()  # BatchNorm in eval mode: the projections below are reproducible
    batches = [fixed_views(method, n=8, seed=s) for s in range(3)]
    expected = []
    for views in batches:
        with torch.no_grad():
            z = F.normalize(method.projection_head(method.backbone(torch.cat(views[:2]))), dim=1)
        expected.append(z.view(2, 8, -1))
        out = method.training_step(Batch(views))
    assert int(method.queue_filled) == 20 and int(method.queue_ptr) == 4
    assert float(out["queue_filled"]) == 20
    order = (torch.arange(20) + 4) % 20  # the oldest entry sits at the write position
    torch.testing.assert_close(method.queue[:, order], torch.cat(expected, dim=1)[:, 4:])


def test_queue_enters_the_codes_and_starts_at_its_step():
    method = build(queue_length=16, queue_start_step=2)
    views = fixed_views(method, n=8)
    train(method, views, 2)
    assert int(method.queue_filled) == 0  # steps 0 and 1 came before queue_start_step
    out = method.training_step(Batch(views))
    assert int(method.queue_filled) == 8
    # The next step's codes are Sinkhorn over batch + queue: compare with SwAVLoss given the
    # queue's scores explicitly (eval mode: the same projections in both computations).
    method.eval()
    queue = method.queue[:, :8].clone()
    out = method.training_step(Batch(views))
    with torch.no_grad():
        z = F.normalize(
            method.projection_head(
                torch.cat(
                    [method.backbone(torch.cat(views[:2])), method.backbone(torch.cat(views[2:]))]
                )
            ),
            dim=1,
        )
        w = method.prototype_head.weight
        s = (z @ w.T).split(8)
        loss_fn = SwAVLoss(0.1, 0.05, 3)
        with_queue = loss_fn(s[:2], s[2:], queue_scores=[queue[0] @ w.T, queue[1] @ w.T])
    torch.testing.assert_close(out["loss"].detach(), with_queue)
    assert not torch.allclose(with_queue, loss_fn(s[:2], s[2:]))
    assert int(method.queue_filled) == 16


# -- training and resuming -----------------------------------------------------------------------


def test_loss_falls_on_a_fixed_batch():
    # What tests/ssl/test_methods.py does for every registered method.
    method = build()
    views = fixed_views(method, n=32)
    losses, _ = train(method, views, 15)
    assert losses[-1] < losses[0], losses


def test_loss_falls_with_a_queue():
    method = build(queue_length=64, freeze_prototypes_iters=0)
    views = fixed_views(method, n=16)
    losses, out = train(method, views, 15)
    assert float(out["queue_filled"]) == 64
    assert losses[-1] < losses[1], losses


def test_state_dict_round_trip_resumes_exactly():
    a = build(queue_length=24, freeze_prototypes_iters=3, queue_start_step=1)
    views = fixed_views(a, n=8)
    opt = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9)

    def step(method, optimizer):
        out = method.training_step(Batch(views))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        method.on_step_end(int(method.steps_done) + 1, 10)
        return float(out["loss"].detach())

    for _ in range(2):
        step(a, opt)
    # Deep copies, as a checkpoint file holds (the optimizer's state_dict shares its tensors).
    state, opt_state = copy.deepcopy(a.state_dict()), copy.deepcopy(opt.state_dict())
    assert {"queue", "queue_ptr", "queue_filled", "steps_done"} <= set(state)
    b = build(seed=123, queue_length=24, freeze_prototypes_iters=3, queue_start_step=1)
    b.load_state_dict(state)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    opt_b.load_state_dict(opt_state)
    # Steps 3-5 cross the end of the freeze and fill the queue; both runs must agree exactly.
    assert [step(a, opt) for _ in range(3)] == [step(b, opt_b) for _ in range(3)]
    assert torch.equal(a.queue, b.queue) and int(a.steps_done) == int(b.steps_done) == 5


# -- construction errors -------------------------------------------------------------------------


def linear_backbone():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_construction_errors():
    proj, protos = nn.Linear(16, 8), nn.Linear(8, 5, bias=False)
    with pytest.raises(ValueError, match="no bias"):
        SwAV(linear_backbone(), proj, nn.Linear(8, 5))
    with pytest.raises(TypeError, match="prototype_head"):
        SwAV(linear_backbone(), proj, nn.Sequential(nn.Linear(8, 5, bias=False)))
    with pytest.raises(ValueError, match="at least 1 prototype"):
        SwAV(linear_backbone(), proj, nn.Linear(8, 0, bias=False))
    with pytest.raises(TypeError, match="projection_head"):
        SwAV(linear_backbone(), "mlp", protos)
    for kwargs, match in [
        ({"temperature": 0.0}, "temperature"),
        ({"sinkhorn_epsilon": 0}, "sinkhorn_epsilon"),
        ({"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
        ({"freeze_prototypes_iters": -1}, "freeze_prototypes_iters"),
        ({"freeze_prototypes_iters": 1.5}, "freeze_prototypes_iters"),
        ({"queue_length": -4}, "queue_length"),
        ({"queue_start_step": -1}, "queue_start_step"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            SwAV(linear_backbone(), proj, protos, **kwargs)
    # The recipe's crops must fit the images: refused at construction, not at the first batch.
    with pytest.raises(ValueError, match=r"input_shape \(1, 16, 16\).*larger than the 16x16"):
        SwAV(linear_backbone(), proj, protos, views=swav_views(28), input_shape=(1, 16, 16))
    with pytest.raises(ValueError, match="at least 2 crops"):
        SwAV(linear_backbone(), proj, protos, views=MultiView([swav_views(8).views[0]]))
    with pytest.raises(ValueError, match="num_prototypes"):
        swav_heads(64, {**SMALL, "num_prototypes": 0})
    # A PrototypesHead is accepted too.
    assert SwAV(linear_backbone(), proj, PrototypesHead(8, 5)).num_prototypes == 5


def test_check_num_prototypes():
    check_num_prototypes(100, 100)
    with pytest.raises(ValueError, match=r"num_prototypes=3000 is larger than the training set"):
        check_num_prototypes(3000, 1797)
    with pytest.raises(ValueError, match="num_prototypes"):
        check_num_prototypes(0, 10)
    with pytest.raises(TypeError, match="dataset_size"):
        check_num_prototypes(10, 10.5)
    assert build().num_prototypes == 8


# -- torch.distributed ---------------------------------------------------------------------------


def ddp_method():
    # No BatchNorm (per-rank statistics would differ from the whole batch's, correctly).
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    head = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 6))
    return SwAV(backbone, head, nn.Linear(6, 5, bias=False), queue_length=12).double()


def swav_queue(method):
    return method.queue.clone()


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    # Step 1 fills the queue from both ranks, step 2 uses it in codes gathered over ranks.
    check_half_batches_match_the_whole_batch(tmp_path, ddp_method, swav_queue)


def test_codes_gathered_over_ranks_equal_one_process_sinkhorn():
    # Without a process group, gather_distributed is a no-op.
    s = [torch.randn(6, 4).tanh() for _ in range(2)]
    a = SwAVLoss(gather_distributed=True).codes(s)
    torch.testing.assert_close(a[0], sinkhorn(s[0]))


def test_the_trainer_runs_it_and_logs_the_codes(tmp_path):
    from metricssl.ssl.trainer import Trainer

    method = build(freeze_prototypes_iters=3, queue_length=32)
    start = method.prototype_head.weight.detach().clone()
    images = tiny_images(64)
    trainer = Trainer(
        method=method,
        dataset=(images, torch.arange(64) % 4),
        epochs=2,
        batch_size=16,
        steps_per_epoch=2,
        out=tmp_path / "run",
        progress=False,
        knn_k=5,
        amp="off",
    )
    trainer.fit()
    # The Trainer's on_step_end calls drive the step counter, hence the freeze and the queue.
    assert int(method.steps_done) == trainer.step == 4
    assert not torch.allclose(method.prototype_head.weight, start, atol=1e-4)
    row = trainer.history[-1]
    assert {"code_entropy", "prototypes_used", "queue_filled"} <= set(row)
    assert 0 < row["code_entropy"] <= math.log(8) and math.isfinite(row["loss"])


def test_the_registry_entry_builds_and_trains():
    from metricssl.ssl import registry

    method = registry.build_method("swav", (1, 28, 28))
    assert method.feature_dim == 512 and method.num_prototypes == 100
    assert method.freeze_prototypes_iters == 200 and method.views.n_local == 4
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        registry.build_method("swav", (1, 8, 8), hparams={"num_prototype": 4})
    # What tests/ssl/test_methods.py does with SMALL["swav"].
    small = {"proj_hidden_dim": 32, "proj_output_dim": 16, "num_prototypes": 8}
    small["freeze_prototypes_iters"] = 2
    torch.manual_seed(0)
    method = registry.build_method(
        "swav",
        (1, 8, 8),
        backbone_kwargs={"embedding_dim": 32, "width": 8},
        hparams=small,
        mean=[0.5],
        std=[0.3],
    )
    views = method.make_views(tiny_images(), torch.Generator().manual_seed(1))
    assert [v.shape[-1] for v in views] == [8, 8, 4, 4, 4, 4]
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(1, 16):
        out = method.training_step(Batch(views))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(step, 15)
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0], losses


def test_the_trainer_refuses_more_prototypes_than_images(tmp_path):
    from metricssl.ssl.trainer import Trainer

    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="num_prototypes=50 is larger than the training set"):
        Trainer(
            method="swav",
            dataset=(images, None),
            hparams={"num_prototypes": 50},
            batch_size=8,
            out=tmp_path,
            progress=False,
        )
