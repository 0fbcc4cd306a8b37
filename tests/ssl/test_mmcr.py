"""MMCR: views grouped by image into MMCRLoss, the optional momentum encoder, the k-view
recipe, DDP over the global centroid matrix, the Trainer and the registry, errors."""

import pytest
import torch
from torch import nn

from metricssl.losses import MMCRLoss
from metricssl.ssl.method import Batch
from metricssl.ssl.mmcr import MMCR, MMCRConfig, mmcr_views
from tests.gloo import check_half_batches_match_the_whole_batch
from tests.ssl.tiny_runs import BAD_MOMENTUM, assert_refused_by_name, tiny_images, tiny_trainer


def small_method(**kwargs):
    # No BatchNorm: the DDP check compares per-rank halves with the whole batch.
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    head = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 6))
    return MMCR(backbone, head, **kwargs).double()


def views(k=3, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(k)]


def project(backbone, head, batch_views):
    """(B, k, D) built image by image, view by view."""
    rows = [
        torch.stack([head(backbone(v[i : i + 1]))[0] for v in batch_views])
        for i in range(batch_views[0].shape[0])
    ]
    return torch.stack(rows)


def test_loss_is_mmcr_loss_of_each_image_s_views():
    method = small_method(lmda=0.1)
    batch_views = views(k=4)
    expected = MMCRLoss(lmda=0.1)(project(method.backbone, method.projection_head, batch_views))
    torch.testing.assert_close(method.training_step(Batch(batch_views))["loss"], expected)


def test_without_momentum_there_is_no_target_and_no_momentum_to_log():
    method = small_method()
    assert method.target_backbone is None and method.current_momentum is None
    assert not any("target" in name for name in method.state_dict())
    method.on_step_end(1, 10)  # nothing to update


def test_momentum_encoder_joins_the_centroids_and_follows_the_online_network():
    method = small_method(momentum=0.9)
    with torch.no_grad():  # a target that differs from the online network
        for p in method.target_projection_head.parameters():
            p.add_(0.1)
    batch_views = views()
    online = project(method.backbone, method.projection_head, batch_views)
    target = project(method.target_backbone, method.target_projection_head, batch_views)
    expected = MMCRLoss()(online, target.detach())
    loss = method.training_step(Batch(batch_views))["loss"]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    before = method.target_backbone[1].weight.detach().clone()
    method.on_step_end(1, 10)
    m = method.current_momentum(1, 10)
    assert 0.9 < m < 1.0
    torch.testing.assert_close(
        method.target_backbone[1].weight, m * before + (1 - m) * method.backbone[1].weight
    )


def test_loss_falls_on_a_fixed_batch():
    method = small_method()
    opt = torch.optim.AdamW(method.parameters(), lr=1e-2)
    batch_views, losses = views(k=4, n=16), []
    for _ in range(20):
        loss = method.training_step(Batch(batch_views))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


def mmcr_head_weight(method):
    return method.projection_head[2].weight.detach().clone()


@pytest.mark.parametrize("momentum", [None, 0.9])
def test_half_batches_under_ddp_match_the_whole_batch(tmp_path, momentum):
    # The centroid matrix of the whole batch is gathered from both ranks' halves.
    check_half_batches_match_the_whole_batch(
        tmp_path, lambda: small_method(momentum=momentum), mmcr_head_weight
    )


def test_the_recipe_makes_n_views_without_blur():
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert len(mmcr_views(8)(images)) == 4
    assert len(mmcr_views(8, n_views=6)(images)) == 6
    with pytest.raises(ValueError, match="n_views"):
        mmcr_views(8, n_views=1)


def test_the_trainer_trains_it_with_four_views(tmp_path):
    from metricssl.ssl.registry import build_method

    hp = {"proj_hidden_dim": 32, "proj_output_dim": 16}
    method = build_method("mmcr", (1, 8, 8), backbone_kwargs={"width": 4}, hparams=hp)
    assert method.views.n_views == 4
    trainer = tiny_trainer(
        tmp_path / "run",
        method,
        dataset=tiny_images(64, (1, 8, 8)),
        epochs=1,
        steps_per_epoch=3,
        amp="off",
    )
    trainer.fit()
    row = trainer.history[-1]
    # Minus the nuclear norm of 16 centroids of unit vectors: in [-16, 0).
    assert -16 <= row["loss"] < 0 and "momentum" not in row


def test_the_registry_entry_and_its_momentum_option():
    from metricssl.ssl.registry import build_method

    method = build_method("mmcr", (1, 28, 28))
    assert method.criterion.lmda == 0.0 and method.criterion.gather_distributed
    assert method.target_backbone is None
    assert method.projection_head(torch.randn(4, method.feature_dim)).shape == (4, 128)
    method = build_method("mmcr", (1, 8, 8), hparams={"momentum": 0.99})
    assert method.target_backbone is not None and method.current_momentum(0, 10) == 0.99


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lmda=-0.5), "lmda"),
        *BAD_MOMENTUM,
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    assert_refused_by_name(
        match, lambda: small_method(**kwargs), lambda: MMCRConfig(**kwargs), errors=ValueError
    )


def test_too_few_views_or_images_are_refused():
    with pytest.raises(ValueError, match="needs 2 views"):
        small_method().training_step(Batch(views(k=1)))
    with pytest.raises(ValueError, match="at least 2 images"):
        small_method().training_step(Batch(views(n=1)))
