"""MoCo v3: the loss against the paper's formula, the momentum encoder, errors, the Trainer
with a CNN and a ViT, and DDP."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricssl.models.vit import VisionTransformer
from metricssl.ssl.method import Batch
from metricssl.ssl.moco_v3 import MoCoV3, MoCoV3Config
from tests.gloo import check_half_batches_match_the_whole_batch
from tests.ssl.tiny_runs import (
    BAD_MOMENTUM,
    CNN_AND_VIT,
    assert_refused_by_name,
    byol_style_method,
    tiny_trainer,
)

SMALL = {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32}


def linear_method(**kwargs):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    return MoCoV3(backbone, nn.Linear(16, 8), nn.Linear(8, 8), **kwargs).double()


def views(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]


def ctr(q, k, tau):
    """The paper's ctr(q, k) written out: -log of the softmax of q_i.k_i / tau over j, mean
    over i, times 2 tau."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    n = q.shape[0]
    total = 0.0
    for i in range(n):
        logits = [float(q[i] @ k[j]) / tau for j in range(n)]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return 2 * tau * total / n


def test_loss_is_the_papers_symmetric_scaled_infonce():
    method = linear_method(temperature=0.3)
    v1, v2 = views()
    with torch.no_grad():
        q1, q2 = (
            method.prediction_head(method.projection_head(method.backbone(v))) for v in (v1, v2)
        )
        k1, k2 = (method.momentum_projection_head(method.momentum_backbone(v)) for v in (v1, v2))
    loss = method.training_step(Batch([v1, v2]))["loss"]
    expected = ctr(q1, k2, 0.3) + ctr(q2, k1, 0.3)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_keys_carry_no_gradient_and_the_loss_trains_the_online_network():
    method = linear_method()
    method.training_step(Batch(views()))["loss"].backward()
    assert all(p.grad is None for p in method.momentum_backbone.parameters())
    assert all(not p.requires_grad for p in method.momentum_projection_head.parameters())
    assert all(p.grad is not None for p in method.prediction_head.parameters())
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_momentum_encoder_starts_as_a_copy_and_follows_the_cosine_schedule():
    method = linear_method(momentum=0.9)
    for online, target in (
        (method.backbone, method.momentum_backbone),
        (method.projection_head, method.momentum_projection_head),
    ):
        for o, t in zip(online.parameters(), target.parameters(), strict=True):
            assert torch.equal(o, t)
    assert method.current_momentum(0, 10) == pytest.approx(0.9)
    assert method.current_momentum(5, 10) == pytest.approx(0.95)
    assert method.current_momentum(10, 10) == pytest.approx(1.0)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.momentum_backbone.parameters()]
    method.on_step_end(5, 10)
    for b, t, o in zip(
        before, method.momentum_backbone.parameters(), method.backbone.parameters(), strict=True
    ):
        torch.testing.assert_close(t, 0.95 * b + 0.05 * o)
    # The predictor has no momentum copy.
    assert not hasattr(method, "momentum_prediction_head")


def test_loss_falls_on_a_fixed_batch():
    method = linear_method()
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    batch = Batch(views(16))
    losses = []
    for step in range(1, 21):
        out = method.training_step(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(step, 20)
        losses.append(out["loss"].item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        *BAD_MOMENTUM,
    ],
)
def test_bad_arguments_are_refused_with_their_name(kwargs, name):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    assert_refused_by_name(
        name,
        lambda: MoCoV3(backbone, nn.Linear(16, 8), nn.Linear(8, 8), **kwargs),
        lambda: MoCoV3Config(**kwargs),
    )


def test_a_module_is_required_and_a_batch_of_one_is_refused():
    with pytest.raises(TypeError, match="backbone"):
        MoCoV3("resnet", nn.Linear(16, 8), nn.Linear(8, 8))
    method = linear_method()
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(Batch([v[:1] for v in views()]))


def test_the_registry_builds_the_papers_heads_and_byol_views():
    method = byol_style_method("moco_v3", MoCoV3)
    assert method.temperature == 0.2 and method.base_momentum == 0.99


@CNN_AND_VIT
def test_the_trainer_trains_it_with_a_cnn_and_a_vit(backbone, backbone_kwargs, tmp_path):
    trainer = tiny_trainer(
        tmp_path,
        "moco_v3",
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        hparams=SMALL,
        epochs=2,
        steps_per_epoch=2,
    )
    start = [p.clone() for p in trainer.method.momentum_backbone.parameters()]
    final = trainer.fit()
    assert math.isfinite(final["loss"]) and trainer.step == 4
    if backbone == "vit_tiny":
        assert isinstance(trainer.method.backbone, VisionTransformer)
    moved = [
        not torch.equal(a, b) for a, b in zip(start, trainer.method.momentum_backbone.parameters())
    ]
    assert any(moved)  # the Trainer's on_step_end calls move the momentum encoder


def ddp_method():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
    return MoCoV3(backbone, nn.Linear(6, 5), nn.Linear(5, 5), temperature=0.5).double()


def momentum_state(method):
    return {k: v.clone() for k, v in method.momentum_projection_head.state_dict().items()}


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    # The keys of both ranks are every query's negatives; step 2 runs after a momentum update.
    check_half_batches_match_the_whole_batch(tmp_path, ddp_method, momentum_state)
