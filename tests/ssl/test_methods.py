"""Each method's training step: the loss falls on a fixed batch, values match the references."""

import pytest
import torch
from torch import nn

from metricssl.losses.ntxent_loss import NTXentLoss
from metricssl.ssl.byol import BYOL
from metricssl.ssl.datasets import ImageData
from metricssl.ssl.method import Batch
from metricssl.ssl.moco import MoCo
from metricssl.ssl.registry import METHODS, build_method
from metricssl.ssl.simclr import SimCLR, gathered_ntxent

SMALL = {
    "simclr": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "dcl": {"proj_hidden_dim": 64, "proj_output_dim": 32, "weighted": True},
    "moco": {"proj_hidden_dim": 64, "proj_output_dim": 32, "queue_size": 32},
    "byol": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 64},
    "moco_v3": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 64},
    "nnclr": {
        "proj_hidden_dim": 64,
        "proj_output_dim": 32,
        "pred_hidden_dim": 64,
        "queue_size": 32,
    },
    "simsiam": {"proj_hidden_dim": 64, "proj_output_dim": 32, "pred_hidden_dim": 16},
    "barlow_twins": {"proj_hidden_dim": 64, "proj_output_dim": 64},
    "vicreg": {"proj_hidden_dim": 64, "proj_output_dim": 64},
    "tico": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "mmcr": {"proj_hidden_dim": 64, "proj_output_dim": 32},
    "supervised": {"miner": None},
    "npid": {"embedding_dim": 16, "num_negatives": 16},
    "pirl": {"embedding_dim": 16, "grid": 2, "tile_dim": 8, "num_negatives": 16, "tile_jitter": 0},
    "rotnet": {"head_hidden_dim": 32},
    "jigsaw": {
        "grid": 2,
        "num_permutations": 8,
        "tile_dim": 16,
        "head_hidden_dim": 32,
        "tile_jitter": 0,
    },
    "context_encoder": {"decoder_width": 8},
    "denoising_autoencoder": {"decoder_width": 8},
    "vae": {"latent_dim": 8, "decoder_width": 8},
    "mae": {"decoder_width": 16, "decoder_depth": 1, "decoder_heads": 2},
    "swav": {
        "proj_hidden_dim": 32,
        "proj_output_dim": 16,
        "num_prototypes": 8,
        "freeze_prototypes_iters": 2,
    },
    "deepcluster": {"proj_hidden_dim": 32, "proj_output_dim": 16, "num_clusters": 4},
    "dino": {
        "proj_hidden_dim": 32,
        "proj_bottleneck_dim": 16,
        "output_dim": 64,
        "freeze_last_layer_iters": 2,
    },
}


# The named backbone's arguments: small_cnn's unless the method's default backbone is another.
BACKBONE_KWARGS = {"mae": {"width": 32, "depth": 1, "heads": 2}}  # vit_tiny, narrow and shallow


def tiny_images(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_loss_falls_on_a_fixed_batch(name):
    torch.manual_seed(0)
    method = build_method(
        name,
        (1, 8, 8),
        backbone_kwargs=BACKBONE_KWARGS.get(name, {"embedding_dim": 32, "width": 8}),
        hparams=SMALL[name],
        mean=[0.5],
        std=[0.3],
        num_classes=4,
        num_samples=32,
    )
    images = tiny_images()
    labels = torch.arange(32) % 4
    method.on_epoch_start(0, ImageData(images, labels))
    gen = torch.Generator().manual_seed(1)
    views = method.make_views(images, gen)
    assert len(views) >= method.num_views  # multi-crop recipes give more
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(1, 16):
        out = method.training_step(Batch(views, labels, torch.arange(32)))
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.on_step_end(step, 15)
        losses.append(float(out["loss"].detach()))
    # MoCo's first loss contrasts against an empty queue: compare from step 2 on.
    first = losses[1] if name == "moco" else losses[0]
    assert losses[-1] < first, losses


def test_gathered_ntxent_equals_ntxent_loss_value_and_gradient():
    torch.manual_seed(0)
    z1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    ours = gathered_ntxent(z1, z2, 0.3)
    ours.backward()
    g_ours = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    ids = torch.arange(6)
    ref = NTXentLoss(temperature=0.3)(torch.cat([z1, z2]), torch.cat([ids, ids]))
    ref.backward()
    torch.testing.assert_close(ours, ref.to(ours.dtype))
    torch.testing.assert_close(g_ours[0], z1.grad.to(g_ours[0].dtype))
    torch.testing.assert_close(g_ours[1], z2.grad.to(g_ours[1].dtype))


def linear_backbone():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16))


def test_moco_queue_is_a_ring_of_the_latest_keys():
    torch.manual_seed(0)
    method = MoCo(linear_backbone(), nn.Linear(16, 8), queue_size=10)
    views = [torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)]
    keys = []
    for _ in range(3):
        with torch.no_grad():
            keys.append(
                nn.functional.normalize(
                    method.key_projection_head(method.key_backbone(views[1])), dim=1
                )
            )
        method.training_step(Batch(views))
    assert int(method.queue_filled) == 10 and int(method.queue_ptr) == 2
    expected = torch.cat(keys)[2:]  # 12 keys through 10 slots: the first 2 were overwritten
    order = (torch.arange(10) + 2) % 10  # the oldest entry sits at the write position
    torch.testing.assert_close(method.queue[order], expected)


def test_momentum_updates_follow_the_schedules():
    torch.manual_seed(0)
    method = BYOL(linear_backbone(), nn.Linear(16, 8), nn.Linear(8, 8), momentum=0.9)
    assert method.current_momentum(0, 10) == pytest.approx(0.9)
    assert method.current_momentum(10, 10) == pytest.approx(1.0)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.target_backbone.parameters()]
    method.on_step_end(0, 10)
    for b, t, o in zip(before, method.target_backbone.parameters(), method.backbone.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert not any(p.requires_grad for p in method.target_backbone.parameters())


def test_stop_gradient_and_frozen_targets():
    torch.manual_seed(0)
    method = BYOL(linear_backbone(), nn.Linear(16, 8), nn.Linear(8, 8))
    out = method.training_step(Batch([torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)]))
    out["loss"].backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    assert all(p.grad is not None for p in method.backbone.parameters())


def test_batch_and_shape_errors():
    method = SimCLR(linear_backbone(), nn.Linear(16, 8), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(Batch([torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)]))
    with pytest.raises(ValueError, match="needs 2 views"):
        method.training_step(Batch([torch.rand(4, 1, 8, 8)]))
    with pytest.raises(ValueError, match=r"built for \(1, 8, 8\)"):
        method.embed(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        method.embed(torch.zeros(8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(linear_backbone(), nn.Linear(16, 8), temperature=0)
    with pytest.raises(TypeError, match="backbone"):
        SimCLR("resnet", nn.Linear(16, 8))
    with pytest.raises(ValueError, match="unknown method"):
        build_method("simclrr", (1, 8, 8))
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build_method("simclr", (1, 8, 8), hparams={"temprature": 0.1})
    with pytest.raises(ValueError, match="unknown backbone"):
        build_method("simclr", (1, 8, 8), backbone="vgg")
    sup = build_method("supervised", (1, 8, 8))
    with pytest.raises(ValueError, match="needs labels"):
        sup.training_step(Batch([torch.rand(4, 1, 8, 8)]))
    with pytest.raises(ValueError, match="unknown loss"):
        build_method("supervised", (1, 8, 8), hparams={"loss": "NoSuchLoss"})
    with pytest.raises(ValueError, match="unknown miner"):
        build_method("supervised", (1, 8, 8), hparams={"miner": "NoSuchMiner"})


def test_small_cnn_pools_to_a_grid_from_16_pixels_up():
    from metricssl.ssl.registry import build_backbone

    assert build_backbone("small_cnn", (1, 28, 28)).num_features == 512
    assert build_backbone("small_cnn", (1, 8, 8)).num_features == 128
    assert build_backbone("small_cnn", (1, 28, 28), pool_size=1).num_features == 128


def test_build_method_passes_view_kwargs_to_the_recipe():
    from metricssl.augment.flip import RandomHorizontalFlip

    def flips(method):
        return [m for m in method.views.modules() if isinstance(m, RandomHorizontalFlip)]

    assert flips(build_method("simclr", (1, 28, 28)))
    assert not flips(build_method("simclr", (1, 28, 28), view_kwargs={"flip_p": 0.0}))
    with pytest.raises(TypeError, match="no_such_option"):
        build_method("simclr", (1, 28, 28), view_kwargs={"no_such_option": 1})


def test_supervised_embeds_through_a_linear_head_of_embedding_dim():
    method = build_method("supervised", (1, 8, 8), num_classes=3)
    assert isinstance(method.embedding_head, nn.Linear)
    assert method.embed(tiny_images(4)).shape == (4, 128)
    plain = build_method("supervised", (1, 8, 8), hparams={"embedding_dim": None})
    assert plain.embedding_head is None and plain.embed(tiny_images(4)).shape == (4, 128)
    # Proxy losses are sized by the embedding width, not the backbone's.
    proxy = build_method(
        "supervised",
        (1, 8, 8),
        hparams={"embedding_dim": 16, "loss": "ProxyAnchorLoss", "miner": None},
        num_classes=3,
    )
    assert proxy.loss_fn.proxies.shape == (3, 16)
    with pytest.raises(ValueError, match="embedding_dim"):
        build_method("supervised", (1, 8, 8), hparams={"embedding_dim": 0})


@pytest.mark.parametrize("name", ["swav", "dino"])
def test_multi_crop_methods_reject_bad_batches(name):
    # Both check their crops with method.check_multi_crop_views.
    method = build_method(name, (1, 8, 8), backbone_kwargs={"width": 4}, hparams=SMALL[name])
    with pytest.raises(ValueError, match="needs 2 views"):
        method.training_step(Batch([torch.rand(4, 1, 8, 8)]))
    with pytest.raises(ValueError, match="at least 2 images"):
        method.training_step(Batch([torch.rand(1, 1, 8, 8)] * 2))
    with pytest.raises(ValueError, match="global crops differ"):
        method.training_step(Batch([torch.rand(4, 1, 8, 8), torch.rand(4, 1, 4, 16)]))
    with pytest.raises(ValueError, match=r"views\[2\] has 3 images"):
        method.training_step(Batch([torch.rand(4, 1, 8, 8)] * 2 + [torch.rand(3, 1, 8, 8)]))
