"""NNCLR: the nearest-neighbour lookup against brute force, the loss against the paper's
formula, the support set's order and checkpoint, errors, the Trainer with a CNN and a ViT,
and DDP."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metricssl.models.vit import VisionTransformer
from metricssl.ssl.method import Batch
from metricssl.ssl.nnclr import NNCLR, NNCLRConfig, nearest_neighbours
from tests.gloo import check_half_batches_match_the_whole_batch
from tests.ssl.tiny_runs import (
    CNN_AND_VIT,
    assert_refused_by_name,
    byol_style_method,
    tiny_trainer,
)

SMALL = {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32, "queue_size": 40}


def linear_method(**kwargs):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    return NNCLR(backbone, nn.Linear(16, 8), nn.Linear(8, 8), **kwargs).double()


def views(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]


def brute_force_neighbour(z, support):
    """The support row of the largest cosine with z, by a loop (first one on a tie)."""
    best, best_score = None, -math.inf
    for row in support:
        score = float(z @ row) / (float(z.norm()) * float(row.norm()))
        if score > best_score:
            best, best_score = row, score
    return best


def ctr(anchors, predictions, tau):
    """InfoNCE written out: -log softmax over j of a_i.p_j / tau (unit vectors) at j = i."""
    a, p = F.normalize(anchors, dim=1), F.normalize(predictions, dim=1)
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        logits = [float(a[i] @ p[j]) / tau for j in range(n)]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / n


@pytest.mark.parametrize("seed", range(3))
def test_nearest_neighbours_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    support = F.normalize(torch.randn(50, 7, generator=g, dtype=torch.float64), dim=1)
    z = torch.randn(9, 7, generator=g, dtype=torch.float64) * 3.0  # not unit: cosine, not dot
    got = nearest_neighbours(z, support)
    expected = torch.stack([brute_force_neighbour(row, support) for row in z])
    torch.testing.assert_close(got, expected)


def test_nearest_neighbours_are_constants_and_ties_go_to_the_first_row():
    support = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[2.0, 0.5]], requires_grad=True)
    nn_ = nearest_neighbours(z, support)
    assert not nn_.requires_grad
    assert torch.equal(nn_, support[:1])


def stored(method, n):
    """Fill the support set with n rows as a past batch would."""
    method._enqueue(F.normalize(torch.randn(n, 8, dtype=torch.float64), dim=1))


def test_loss_is_the_symmetric_infonce_of_neighbours_against_the_other_views_predictions():
    method = linear_method(temperature=0.2, queue_size=30)
    torch.manual_seed(5)
    stored(method, 30)
    support = method.queue.clone()
    v1, v2 = views()
    with torch.no_grad():
        z1, z2 = (method.projection_head(method.backbone(v)) for v in (v1, v2))
        p1, p2 = (method.prediction_head(z) for z in (z1, z2))
    nn1 = torch.stack([brute_force_neighbour(z, support) for z in z1])
    nn2 = torch.stack([brute_force_neighbour(z, support) for z in z2])
    loss = method.training_step(Batch([v1, v2]))["loss"]
    expected = 0.5 * (ctr(nn1, p2, 0.2) + ctr(nn2, p1, 0.2))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_before_anything_is_stored_a_projection_is_its_own_neighbour():
    method = linear_method(temperature=0.2)
    v1, v2 = views()
    with torch.no_grad():
        z1, z2 = (method.projection_head(method.backbone(v)) for v in (v1, v2))
        p1, p2 = (method.prediction_head(z) for z in (z1, z2))
    loss = method.training_step(Batch([v1, v2]))["loss"]
    expected = 0.5 * (ctr(z1, p2, 0.2) + ctr(z2, p1, 0.2))
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_gradient_flows_through_the_predictions_only():
    method = linear_method()
    stored(method, 12)
    method.training_step(Batch(views()))["loss"].backward()
    assert all(p.grad is not None for p in method.prediction_head.parameters())
    assert all(p.grad is not None for p in method.backbone.parameters())
    assert not method.queue.requires_grad


def test_support_set_is_a_ring_of_the_latest_first_view_projections():
    method = linear_method(queue_size=10)
    batches = [views(4, seed) for seed in range(3)]
    written = []
    for b in batches:
        with torch.no_grad():
            written.append(F.normalize(method.projection_head(method.backbone(b[0])), dim=1))
        out = method.training_step(Batch(b))
    assert method.counter("queue_filled") == int(method.queue_filled) == 10
    assert method.counter("queue_ptr") == int(method.queue_ptr) == 2
    assert out["queue_filled"].item() == 10
    expected = torch.cat(written)[2:]  # 12 projections through 10 slots: the first 2 are gone
    order = (torch.arange(10) + 2) % 10  # the oldest entry sits at the write position
    torch.testing.assert_close(method.queue[order], expected)


def test_a_batch_larger_than_the_support_set_keeps_its_last_rows():
    method = linear_method(queue_size=3)
    z = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1)
    method._enqueue(z)
    assert method.counter("queue_ptr") == 0 and method.counter("queue_filled") == 3
    torch.testing.assert_close(method.queue, z[2:])


def test_a_fresh_module_loads_the_support_set_and_resumes_exactly():
    method = linear_method(queue_size=16)
    method.training_step(Batch(views(6, 0)))
    state = {k: v.clone() for k, v in method.state_dict().items()}
    fresh = linear_method(queue_size=16)
    assert fresh.queue.numel() == 0
    fresh.load_state_dict(state)
    assert fresh.counter("queue_filled") == 6 and fresh.counter("queue_ptr") == 6
    batch = Batch(views(6, 1))
    a, b = method.training_step(batch)["loss"], fresh.training_step(batch)["loss"]
    assert a.item() == b.item()
    torch.testing.assert_close(method.queue, fresh.queue, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"queue_size": 0}, "queue_size"),
        ({"queue_size": 2.5}, "queue_size"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(kwargs, name):
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    assert_refused_by_name(
        name,
        lambda: NNCLR(backbone, nn.Linear(16, 8), nn.Linear(8, 8), **kwargs),
        lambda: NNCLRConfig(**kwargs),
    )


def test_a_module_is_required_and_a_batch_of_one_is_refused():
    with pytest.raises(TypeError, match="backbone"):
        NNCLR(None, nn.Linear(16, 8), nn.Linear(8, 8))
    method = linear_method()
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(Batch([v[:1] for v in views()]))


def test_the_registry_builds_the_papers_heads_and_byol_views():
    method = byol_style_method("nnclr", NNCLR)
    assert method.queue_size == 8192 and method.temperature == 0.1


@CNN_AND_VIT
def test_the_trainer_trains_it_with_a_cnn_and_a_vit(backbone, backbone_kwargs, tmp_path):
    trainer = tiny_trainer(
        tmp_path,
        "nnclr",
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        hparams=SMALL,
        epochs=2,
        steps_per_epoch=2,
    )
    final = trainer.fit()
    assert math.isfinite(final["loss"]) and trainer.step == 4
    assert trainer.method.counter("queue_filled") == 40  # 4 batches of 16 through 40 slots
    assert trainer.history[-1]["queue_filled"] == 40
    if backbone == "vit_tiny":
        assert isinstance(trainer.method.backbone, VisionTransformer)


def ddp_method():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 6))
    return NNCLR(backbone, nn.Linear(6, 5), nn.Linear(5, 5), queue_size=12).double()


def support_set(method):
    return {"queue": method.queue.clone(), "filled": method.queue_filled.clone()}


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    # Step 1 fills the support set from both ranks in rank order; step 2 looks neighbours up
    # in it and contrasts them with the predictions of both ranks.
    check_half_batches_match_the_whole_batch(tmp_path, ddp_method, support_set)
