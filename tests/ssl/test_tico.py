"""TiCo: the loss of online view 1 against the target's view 2, the momentum target, the
running covariance through training and DDP, the registry entry, errors."""

import pytest
import torch
from torch import nn

from metricssl.losses import TiCoLoss
from metricssl.ssl.method import Batch
from metricssl.ssl.tico import TiCo, TiCoConfig
from tests.gloo import check_half_batches_match_the_whole_batch
from tests.ssl.tiny_runs import BAD_MOMENTUM, assert_refused_by_name, tiny_images, tiny_trainer


def small_method(**kwargs):
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 10))
    head = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 6))
    return TiCo(backbone, head, **kwargs).double()


def two_views(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(2)]


def test_loss_is_tico_loss_of_online_view1_against_target_view2():
    method = small_method(beta=0.5, rho=3.0)
    with torch.no_grad():  # a target that differs from the online network
        for p in method.target_projection_head.parameters():
            p.add_(0.1)
    views = two_views()
    z_a = method.projection_head(method.backbone(views[0]))
    z_b = method.target_projection_head(method.target_backbone(views[1])).detach()
    expected = TiCoLoss(beta=0.5, rho=3.0)(z_a, z_b)
    torch.testing.assert_close(method.training_step(Batch(views))["loss"], expected)
    # The covariance is the online projections' of view 1 (z_a), this batch's share 1 - beta.
    unit = nn.functional.normalize(z_a.detach(), dim=1)
    torch.testing.assert_close(method.criterion.C, 0.5 * unit.T @ unit / 8)


def test_only_the_online_network_learns_and_the_target_follows_it():
    method = small_method(momentum=0.9)
    method.training_step(Batch(two_views()))["loss"].backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert method.backbone[1].weight.grad is not None
    before = method.target_backbone[1].weight.detach().clone()
    with torch.no_grad():
        method.backbone[1].weight.add_(1.0)
    method.on_step_end(1, 10)
    m = method.current_momentum(1, 10)
    assert 0.9 < m < 1.0
    torch.testing.assert_close(
        method.target_backbone[1].weight, m * before + (1 - m) * method.backbone[1].weight
    )


def tico_covariance(method):
    return method.criterion.C.clone()


def test_half_batches_under_ddp_match_the_whole_batch(tmp_path):
    # Step 1 fills C from both ranks' rows, step 2's loss and gradients use it.
    C = check_half_batches_match_the_whole_batch(tmp_path, small_method, tico_covariance)
    assert C.shape == (6, 6) and C.abs().sum() > 0


def test_the_trainer_trains_it_and_the_checkpoint_holds_the_covariance(tmp_path):
    from metricssl.ssl.checkpoint import read_checkpoint
    from metricssl.ssl.registry import build_method

    hp = {"proj_hidden_dim": 32, "proj_output_dim": 16}
    method = build_method("tico", (1, 8, 8), backbone_kwargs={"width": 4}, hparams=hp)
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
    assert torch.isfinite(torch.tensor(row["loss"])) and 0.99 <= row["momentum"] <= 1.0
    saved = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    torch.testing.assert_close(saved["model"]["criterion.C"], method.criterion.C)
    assert method.criterion.C.shape == (16, 16) and method.criterion.C.abs().sum() > 0


def test_the_registry_entry_uses_byol_views_and_the_paper_settings():
    from metricssl.ssl.registry import METHODS, build_method

    method = build_method("tico", (1, 28, 28))
    assert METHODS["tico"].views.__name__ == "byol_views"
    assert (method.criterion.beta, method.criterion.rho) == (0.9, 8.0)
    assert method.criterion.gather_distributed
    assert method.base_momentum == 0.99 and method.final_momentum == 1.0
    assert method.projection_head(torch.randn(4, method.feature_dim)).shape == (4, 256)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=1.2), "beta"),
        (dict(rho=-1.0), "rho"),
        *BAD_MOMENTUM,
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    assert_refused_by_name(
        match, lambda: small_method(**kwargs), lambda: TiCoConfig(**kwargs), errors=ValueError
    )


def test_a_batch_of_one_image_is_refused():
    with pytest.raises(ValueError, match="at least 2 images"):
        small_method().training_step(Batch(two_views(1)))
