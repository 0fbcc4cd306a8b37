"""VAE: the closed-form KL, the ELBO terms, beta and capacity, training, resume, errors."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from metricssl.models.decoder import ConvDecoder
from metricssl.models.small_cnn import SmallCNN
from metricssl.ssl.method import Batch
from metricssl.ssl.registry import build_method
from metricssl.ssl.vae import VAE, gaussian_kl_divergence
from tests.ssl.autoencoder_checks import (
    check_state_dict_round_trip,
    loss_before_and_after,
    plane_views,
)


def make(**kwargs):
    torch.manual_seed(0)
    backbone = SmallCNN(1, embedding_dim=16, width=4)
    kwargs = {"input_shape": (1, 8, 8), "decoder_width": 4, "latent_dim": 4, **kwargs}
    return VAE(backbone, **kwargs)


def test_kl_equals_the_closed_form_for_hand_picked_values():
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]], dtype=torch.float64)
    kl = gaussian_kl_divergence(mu, logvar)
    # Row 0: 0.5 * [(1 + 1 - 1 - 0) + (4 + 4 - 1 - log 4)]; row 1: the prior itself.
    expected = torch.tensor([0.5 * (1 + 7 - math.log(4.0)), 0.0], dtype=torch.float64)
    torch.testing.assert_close(kl, expected)
    std = torch.exp(0.5 * logvar)
    reference = kl_divergence(Normal(mu, std), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(kl, reference)
    with pytest.raises(ValueError, match="mu and logvar"):
        gaussian_kl_divergence(mu, logvar[:, :1])


def set_posterior(method, mu, logvar):
    """Heads that ignore the features: every image gets posterior (mu, logvar)."""
    with torch.no_grad():
        method.mu_head.weight.zero_()
        method.mu_head.bias.copy_(torch.as_tensor(mu))
        method.logvar_head.weight.zero_()
        method.logvar_head.bias.copy_(torch.as_tensor(logvar))


def test_logged_terms_and_the_weighted_loss():
    method = make(beta=2.5, latent_dim=2)
    set_posterior(method, [1.0, 2.0], [0.0, math.log(4.0)])
    predictions = []
    method.decoder_head.register_forward_hook(lambda m, args, out: predictions.append(out))
    views = plane_views()
    out = method.training_step(Batch(views))
    assert set(out) == {"loss", "reconstruction", "kl", "capacity"}
    assert out["kl"].item() == pytest.approx(0.5 * (1 + 7 - math.log(4.0)), rel=1e-5)
    error = (predictions[0] - views[0]).square()
    torch.testing.assert_close(out["reconstruction"], error.mean().detach())
    # The negative ELBO (sum of squared errors per image + beta * KL) per pixel value.
    elbo = error.flatten(1).sum(1).mean() + 2.5 * out["kl"]
    torch.testing.assert_close(out["loss"], elbo / 64)
    assert out["capacity"].item() == 0.0


def test_reparameterisation_samples_around_mu():
    method = make(latent_dim=2)
    codes = []
    method.decoder_head.register_forward_pre_hook(lambda m, args: codes.append(args[0].detach()))
    # A tiny variance: the sampled code is mu.
    set_posterior(method, [0.5, -1.0], [-30.0, -30.0])
    method.training_step(Batch(plane_views()))
    torch.testing.assert_close(codes[0], torch.tensor([[0.5, -1.0]]).expand(32, 2))
    # Variance 4: the codes spread with standard deviation 2 around mu.
    set_posterior(method, [0.5, -1.0], [math.log(4.0)] * 2)
    torch.manual_seed(0)
    method.training_step(Batch(plane_views(n=512)))
    assert codes[1].mean(0).tolist() == pytest.approx([0.5, -1.0], abs=0.25)
    assert codes[1].std(0).tolist() == pytest.approx([2.0, 2.0], rel=0.1)


def test_beta_zero_is_reconstruction_only():
    method = make(beta=0.0)
    out = method.training_step(Batch(plane_views()))
    torch.testing.assert_close(out["loss"].detach(), out["reconstruction"])


def test_capacity_target_rises_linearly_and_the_loss_uses_its_distance():
    method = make(beta=3.0, capacity=10.0, capacity_warmup=0.5)
    method.on_step_end(25, 100)
    assert method.current_capacity.item() == pytest.approx(5.0)
    method.on_step_end(80, 100)
    assert method.current_capacity.item() == pytest.approx(10.0)
    method.on_step_end(10, 100)
    out = method.training_step(Batch(plane_views()))
    assert out["capacity"].item() == pytest.approx(2.0)
    expected = out["reconstruction"] + 3.0 * (out["kl"] - 2.0).abs() / 64
    torch.testing.assert_close(out["loss"].detach(), expected)
    # Without a capacity target nothing moves.
    plain = make()
    plain.on_step_end(50, 100)
    assert plain.current_capacity.item() == 0.0


def test_loss_falls_on_tiny_data():
    before, after = loss_before_and_after(make(), plane_views(), lr=1e-2)
    # 0.50-0.57 of the start over four seeds.
    assert after < 0.75 * before


def test_state_dict_round_trip_gives_the_same_next_loss():
    fresh = check_state_dict_round_trip(lambda: make(capacity=5.0))
    assert "current_capacity" in fresh.state_dict()
    assert fresh.current_capacity.item() == pytest.approx(1.0)


def test_embed_gives_backbone_features_and_encode_the_posterior():
    method = make().eval()
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    features = method.backbone(images.float())
    torch.testing.assert_close(method.embed(images), features)
    mu, logvar = method.encode(images)
    assert mu.shape == logvar.shape == (4, 4)
    torch.testing.assert_close(mu, method.mu_head(features))


def test_heads_built_from_the_feature_width_or_given():
    method = make(latent_dim=6)
    assert method.mu_head.in_features == 16 and method.mu_head.out_features == 6
    assert method.decoder_head.in_features == 6
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    given = VAE(
        backbone,
        mu_head=nn.Linear(10, 3),
        logvar_head=nn.Linear(10, 3),
        decoder_head=ConvDecoder(3, (1, 8, 8)),
        latent_dim=3,
    )
    assert torch.isfinite(given.training_step(Batch([torch.randn(4, 1, 8, 8)]))["loss"])


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latent_dim": 0}, ValueError, "latent_dim"),
        ({"latent_dim": 2.0}, TypeError, "latent_dim"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"beta": float("inf")}, ValueError, "beta"),
        ({"capacity": -1.0}, ValueError, "capacity"),
        ({"capacity_warmup": 0.0}, ValueError, "capacity_warmup"),
        ({"capacity_warmup": 1.5}, ValueError, "capacity_warmup"),
        ({"decoder_width": 0}, ValueError, "decoder_width"),
        ({"mu_head": "linear"}, TypeError, "mu_head"),
        ({"input_shape": None}, ValueError, "input_shape"),
    ],
)
def test_construction_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_head_width_and_batch_errors():
    method = make(latent_dim=4, mu_head=nn.Linear(16, 5))
    with pytest.raises(ValueError, match="mu_head gives shape"):
        method.training_step(Batch(plane_views()))
    with pytest.raises(ValueError, match="at least 2 images"):
        make().training_step(Batch([torch.randn(1, 1, 8, 8)]))


def test_through_build_method():
    method = build_method(
        "vae",
        (1, 8, 8),
        backbone_kwargs={"embedding_dim": 32, "width": 8},
        hparams={"latent_dim": 8, "decoder_width": 8},
        mean=[0.5],
        std=[0.3],
    )
    assert method.latent_dim == 8 and method.mu_head.in_features == 32
    views = method.make_views(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8))
    assert torch.isfinite(method.training_step(Batch(views))["loss"])
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build_method("vae", (1, 8, 8), hparams={"mu_head": nn.Linear(2, 2)})
