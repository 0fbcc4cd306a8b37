"""NPID: instance discrimination against a memory bank of every training image."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.recipes import simclr_views
from ..core.validation import check_number
from .datasets import ImageData
from .memory_bank import BANK_INITS, MemoryBank, start_from_features
from .method import Batch, MethodConfig, SSLMethod, param

NPID_LOSSES = ("softmax", "nce")


def npid_views(image_size, *, mean=None, std=None, **options):
    """NPID's recipe: one view per image, SimCLR's augmentations (crop, flip, jitter, gray)."""
    return simclr_views(image_size, n_views=1, mean=mean, std=std, **options)


def nce_loss(
    positive: torch.Tensor, negatives: torch.Tensor, log_z: torch.Tensor, num_samples: int
) -> torch.Tensor:
    """Noise-contrastive estimation with a uniform noise distribution (NPID's equation 6).

    ``positive`` (B,) and ``negatives`` (B, K) are logits ``v . m / T``; ``P(i|v) =
    exp(logit) / Z``; each data sample should be told apart from ``K`` noise samples drawn
    with probability ``1 / n``: ``h = P / (P + K / n)`` and the loss is ``-log h(positive) -
    sum log(1 - h(negative))``, averaged over the batch. Computed in log space.
    """
    log_k_pn = math.log(negatives.shape[1] / num_samples)
    log_p_pos = positive - log_z
    log_p_neg = negatives - log_z
    data = log_p_pos - torch.logaddexp(log_p_pos, torch.full_like(log_p_pos, log_k_pn))
    noise = log_k_pn - torch.logaddexp(log_p_neg, torch.full_like(log_p_neg, log_k_pn))
    return -(data + noise.sum(dim=1)).mean()


@dataclass(frozen=True)
class NPIDConfig(MethodConfig):
    """NPID's hyper-parameters: the embedding, the memory bank and the loss.

    ``bank_init`` is the paper's ``"random"`` (random unit rows); the Trainer used
    ``"features"`` before (the bank starts from the untrained network's embeddings), which
    is one argument away: ``hparams={"bank_init": "features"}``.

    Example:
        >>> from metricssl.ssl.npid import NPIDConfig
        >>> NPIDConfig().bank_init
        'random'
    """

    embedding_dim: int = param(128, low=1, integer=True)
    num_negatives: int = param(4096, low=1, integer=True)
    temperature: float = param(0.07, low=0, low_inclusive=False)
    memory_momentum: float = param(0.5, low=0, high=1, high_inclusive=False)
    loss: str = param("softmax", choices=NPID_LOSSES)
    bank_init: str = param("random", choices=BANK_INITS)


class NPID(SSLMethod):
    """Non-parametric instance discrimination: each image is its own class.

    Wu, Xiong, Yu and Lin, "Unsupervised Feature Learning via Non-Parametric Instance
    Discrimination", CVPR 2018. The backbone and a linear projection give a unit vector
    ``v_i`` for image ``i``; a :class:`~metricssl.ssl.memory_bank.MemoryBank` holds one unit
    vector ``m_j`` per training image. ``v_i`` should be close to ``m_i`` and far from the
    entries of ``num_negatives`` images drawn uniformly from the bank (one draw per batch,
    shared by its rows), through

    - ``loss="softmax"``: the cross-entropy of the positive among ``[v . m_i, v . m_j ...] /
      T`` (a softmax over sampled negatives, as MoCo later did with a queue; InfoNCE,
      :func:`~metricssl.losses.infonce.info_nce`);
    - ``loss="nce"``: the paper's noise-contrastive estimation (:func:`nce_loss`) with the
      normaliser ``Z`` estimated on the first batch and then held fixed (as in the paper).

    After each step ``m_i`` moves towards ``v_i`` (bank momentum 0.5). The Trainer supplies
    each batch's image positions (``Batch.indices``) and the training split's size
    (``num_samples``).

    Args:
        backbone: images -> features.
        projection_head: features -> the embedding ``v`` (normalised here).
        num_samples: images in the training split (rows of the bank).
        embedding_dim: width of ``v`` (the projection's output; 128 in the paper).
        num_negatives: bank entries per batch used as negatives (4096 in the paper).
        temperature: ``T`` (0.07 in the paper).
        memory_momentum: weight of the old bank entry in each update (0.5 in the paper).
        loss: ``"softmax"`` or ``"nce"``.
        bank_init: ``"random"`` (the paper: random unit rows) or ``"features"``: the rows
            start as the untrained network's embeddings of the training images (see
            :func:`~metricssl.ssl.memory_bank.start_from_features`).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.npid import NPID
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = NPID(backbone, nn.Linear(32, 16), num_samples=100, embedding_dim=16,
        ...               num_negatives=50)
        >>> batch = Batch([torch.rand(8, 1, 8, 8)], indices=torch.arange(8))
        >>> method.training_step(batch)["loss"].backward()
    """

    name = "npid"
    num_views = 1

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        num_samples: int,
        embedding_dim: int = NPIDConfig.embedding_dim,
        num_negatives: int = NPIDConfig.num_negatives,
        temperature: float = NPIDConfig.temperature,
        memory_momentum: float = NPIDConfig.memory_momentum,
        loss: str = NPIDConfig.loss,
        bank_init: str = NPIDConfig.bank_init,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_number("num_samples", num_samples, low=2, integer=True)
        NPIDConfig.check(
            num_negatives=num_negatives, temperature=temperature, loss=loss, bank_init=bank_init
        )
        self.projection_head = projection_head
        self.memory = MemoryBank(num_samples, embedding_dim, memory_momentum)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.loss = loss
        self.bank_init = bank_init
        # Estimated on the first NCE batch; buffers, so a resumed run keeps it.
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("log_z_estimated", torch.zeros((), dtype=torch.bool))

    def on_epoch_start(self, epoch: int, data: ImageData) -> None:
        start_from_features(self, epoch, data)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        if batch.indices is None:
            raise ValueError("NPID needs each image's position in the training set (indices)")
        v = self.projection_head(self.backbone(batch.views[0]))
        with torch.autocast(device_type=v.device.type, enabled=False):
            v = F.normalize(v.float(), dim=1)
            negative_ids = self.memory.sample(self.num_negatives)
            if self.loss == "softmax":
                loss = self.memory.info_nce(v, batch.indices, negative_ids, self.temperature)
            else:
                # NCE is a different estimator (each logit against a fixed normaliser Z, not a
                # softmax over the sampled rows): it takes the logits, not InfoNCE.
                positive, negatives = self.memory.logits(
                    v, batch.indices, negative_ids, self.temperature
                )
                if not self.log_z_estimated:
                    self.log_z.copy_(self._estimate_log_z(positive, negatives))
                    self.log_z_estimated.fill_(True)
                loss = nce_loss(positive, negatives, self.log_z, self.memory.num_samples)
            similarity = self.memory.similarity(v, batch.indices)
        self.memory.update(batch.indices, v)
        return {"loss": loss, "positive_similarity": similarity}

    @torch.no_grad()
    def _estimate_log_z(self, positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        # Z = n * E[exp(v . m / T)], the mean taken over the first batch's logits.
        logits = torch.cat([positive.unsqueeze(1), negatives], dim=1).flatten()
        return (
            torch.logsumexp(logits, 0)
            - math.log(logits.numel())
            + math.log(self.memory.num_samples)
        )


def npid_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """NPID's head: one linear map to ``embedding_dim`` (normalised in the loss)."""
    return {"projection_head": nn.Linear(feature_dim, int(hparams["embedding_dim"]))}
