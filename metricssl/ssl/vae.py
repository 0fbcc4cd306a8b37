"""Variational auto-encoder (and beta-VAE): features through a Gaussian latent code and back."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .method import Batch, MethodConfig, SSLMethod, param
from .reconstruction import backbone_width, build_decoder, check_reconstruction

# exp(logvar) overflows float32 above logvar = 88, which a bad early step can reach; the clamp
# only acts on variances outside e^-30 to e^20, which no trained encoder uses.
LOGVAR_RANGE = (-30.0, 20.0)


def gaussian_kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per row, in nats: the closed form
    ``0.5 * sum(mu**2 + exp(logvar) - 1 - logvar)`` over the latent dimensions (Kingma and
    Welling, appendix B).

    Example:
        >>> import torch
        >>> gaussian_kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).tolist()
        [0.0, 0.0]
    """
    if mu.shape != logvar.shape or mu.ndim != 2:
        raise ValueError(
            f"mu and logvar must both be (N, latent_dim), got {tuple(mu.shape)} and "
            f"{tuple(logvar.shape)}"
        )
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


@dataclass(frozen=True)
class VAEConfig(MethodConfig):
    """The VAE's hyper-parameters: the latent, the KL weight and capacity, the decoder.

    Example:
        >>> from metricssl.ssl.vae import VAEConfig
        >>> VAEConfig().decoder_width
        16
    """

    latent_dim: int = param(32, low=1, integer=True)
    beta: float = param(1.0, low=0)
    capacity: float = param(0.0, low=0)
    capacity_warmup: float = param(1.0, low=0, high=1, low_inclusive=False)
    decoder_width: int = param(16, low=1, integer=True)


class VAE(SSLMethod):
    """Variational auto-encoder on the backbone's features, with beta-VAE's weight on the KL.

    Kingma and Welling, "Auto-Encoding Variational Bayes", ICLR 2014; Higgins et al.,
    "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework",
    ICLR 2017; Burgess et al., "Understanding disentangling in beta-VAE", NeurIPS 2017
    workshop (arXiv:1804.03599), for the capacity target. Two linear heads map the features
    to the mean ``mu`` and log-variance of a Gaussian posterior over a ``latent_dim`` code;
    a code is sampled with the reparameterisation ``z = mu + exp(logvar / 2) * eps``, and the
    decoder maps ``z`` back to an image. The loss is the negative evidence lower bound, with
    the KL term weighted (both divided by ``D``, see below):

    - ``capacity=0``: ``reconstruction + beta * KL`` (``beta=1``: the VAE; ``beta>1``:
      beta-VAE, a narrower code; ``beta=0``: an auto-encoder with a noisy code);
    - ``capacity=C > 0``: ``reconstruction + beta * |KL - c|``, where the target ``c`` rises
      linearly from 0 to ``C`` nats over the first ``capacity_warmup`` share of training
      (Burgess et al.'s controlled capacity increase; their ``gamma`` is ``beta`` here), so
      that the code's information is let in gradually.

    The reconstruction term is the squared error to the clean view, in the space the recipe
    produces (normalised floats when it normalises): the negative log-likelihood of a
    Gaussian decoder with variance 1/2 per pixel value, up to a constant, which suits
    normalised real-valued pixels (a Bernoulli likelihood, BCE, would need [0, 1] targets).
    ``KL`` is the closed form (:func:`gaussian_kl_divergence`). The whole bound is divided by
    the number of values per image, ``D = C * H * W``: the loss is ``mse + beta * KL / D``
    with ``mse`` the mean squared error per pixel value. That changes neither the optimum nor
    the balance of the two terms, only the scale of the gradients, which then match the
    other methods' losses, so the same learning rates suit it (the sum over a 28x28 image
    would need an SGD step 784 times smaller). Logged: ``reconstruction`` (the ``mse``), ``kl`` (nats per image,
    averaged over the batch) and ``capacity`` (the current ``c``).

    :meth:`embed` returns the backbone's features, as for every method: ``mu`` is a linear map
    of them to fewer dimensions, so a linear probe on the features is at least as good, and
    all methods are compared on the same layer. :meth:`encode` gives ``(mu, logvar)``.

    Args:
        backbone: images -> features.
        mu_head, logvar_head: features -> ``latent_dim`` values each; None builds
            ``nn.Linear(feature_dim, latent_dim)`` (``feature_dim`` is inferred from the
            backbone when None).
        decoder_head: codes ``(N, latent_dim)`` -> images; None builds a
            :class:`~metricssl.models.decoder.ConvDecoder` of width ``decoder_width`` to
            ``input_shape``.
        latent_dim: size of the latent code, >= 1.
        beta: weight of the KL term (or of its distance to the capacity target), >= 0.
        capacity: the final KL target ``C`` in nats, >= 0 (0: no target).
        capacity_warmup: share of training over which the target rises to ``C``, in (0, 1].
        decoder_width: channels of the built decoder's last stage.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.vae import VAE
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = VAE(backbone, latent_dim=8, feature_dim=32, input_shape=(1, 8, 8),
        ...              decoder_width=8)
        >>> out = method.training_step(Batch([torch.randn(4, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> sorted(out)
        ['capacity', 'kl', 'loss', 'reconstruction']
    """

    name = "vae"
    num_views = 1
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        mu_head: nn.Module | None = None,
        logvar_head: nn.Module | None = None,
        decoder_head: nn.Module | None = None,
        latent_dim: int = VAEConfig.latent_dim,
        beta: float = VAEConfig.beta,
        capacity: float = VAEConfig.capacity,
        capacity_warmup: float = VAEConfig.capacity_warmup,
        decoder_width: int = VAEConfig.decoder_width,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        VAEConfig.check(
            latent_dim=latent_dim, beta=beta, capacity=capacity, capacity_warmup=capacity_warmup
        )
        if not math.isfinite(beta) or not math.isfinite(capacity):
            raise ValueError("beta and capacity must be finite")
        width = backbone_width(backbone, feature_dim, input_shape)
        heads = {}
        for arg, head in (("mu_head", mu_head), ("logvar_head", logvar_head)):
            if head is None:
                if width is None:
                    raise ValueError(
                        f"VAE needs feature_dim (or input_shape to infer it) to build {arg}; "
                        f"or pass {arg}"
                    )
                head = nn.Linear(width, latent_dim)
            elif not isinstance(head, nn.Module):
                raise TypeError(f"{arg} must be an nn.Module or None, got {type(head).__name__}")
            heads[arg] = head
        self.mu_head = heads["mu_head"]
        self.logvar_head = heads["logvar_head"]
        self.decoder_head = build_decoder(
            type(self).__name__, decoder_head, latent_dim, input_shape, decoder_width
        )
        self.latent_dim = int(latent_dim)
        self.beta = float(beta)
        self.capacity = float(capacity)
        self.capacity_warmup = float(capacity_warmup)
        # The current KL target: a buffer, so a resumed run continues the schedule.
        self.register_buffer("current_capacity", torch.zeros(()))

    def posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the posterior for backbone ``features`` (logvar clamped to
        :data:`LOGVAR_RANGE`)."""
        mu, logvar = self.mu_head(features), self.logvar_head(features)
        expected = (features.shape[0], self.latent_dim)
        for name, value in (("mu_head", mu), ("logvar_head", logvar)):
            if tuple(value.shape) != expected:
                raise ValueError(
                    f"{name} gives shape {tuple(value.shape)}, expected {expected} "
                    f"(latent_dim={self.latent_dim})"
                )
        return mu, logvar.clamp(*LOGVAR_RANGE)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of clean images (uint8, or floats converted like the recipe's
        output), without gradient."""
        self.check_images(images)
        return self.posterior(self.backbone(self.clean_images(images)))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        target = batch.views[0]
        mu, logvar = self.posterior(self.backbone(target))
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        prediction = self.decoder_head(z)
        check_reconstruction(prediction, target)
        with torch.autocast(device_type=target.device.type, enabled=False):
            reconstruction = (prediction.float() - target.float()).square().mean()
            kl = gaussian_kl_divergence(mu.float(), logvar.float()).mean()
            # The negative ELBO per pixel value: (sum of squared errors + beta * KL) / D.
            values_per_image = target[0].numel()
            if self.capacity > 0:
                kl_term = (kl - self.current_capacity).abs()
            else:
                kl_term = kl
            loss = reconstruction + self.beta * kl_term / values_per_image
        return {
            "loss": loss,
            "reconstruction": reconstruction.detach(),
            "kl": kl.detach(),
            "capacity": self.current_capacity.detach().clone(),
        }

    def on_step_end(self, step: int, total_steps: int) -> None:
        if self.capacity > 0:
            ramp = self.capacity_warmup * max(total_steps, 1)
            self.current_capacity.fill_(self.capacity * min(1.0, step / ramp))
