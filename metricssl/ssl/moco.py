"""MoCo v2: a momentum key encoder and a queue of negative keys."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import gather_with_grad
from ..losses.infonce import info_nce
from .counters import HostCounters
from .method import (
    Batch,
    MethodConfig,
    SSLMethod,
    adopt_stored_shapes,
    ema_update,
    momentum_copy,
    param,
)
from .queue import ring_enqueue


@dataclass(frozen=True)
class MoCoConfig(MethodConfig):
    """MoCo v2's hyper-parameters: projection widths, the queue and the key encoder's momentum.

    Example:
        >>> from metricssl.ssl.moco import MoCoConfig
        >>> MoCoConfig().symmetric
        False
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    queue_size: int = param(4096, low=1, integer=True)
    temperature: float = param(0.2, low=0, low_inclusive=False)
    momentum: float = param(0.99, low=0, high=1)
    symmetric: bool = param(False)


class MoCo(HostCounters, SSLMethod):
    """MoCo v2: contrast each query with its key and a queue of past keys.

    He, Fan, Wu, Xie and Girshick, "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020; Chen, Fan, Girshick and He, "Improved Baselines with Momentum
    Contrastive Learning" (MoCo v2: MLP head, stronger augmentation, cosine schedule),
    arXiv 2020.

    The query encoder (backbone + projection head) is trained; the key encoder is a copy
    updated as ``key = momentum * key + (1 - momentum) * query`` after every optimizer step.
    For a query ``q`` (view 1) and its key ``k`` (view 2 through the key encoder), both
    L2-normalised, the loss is the cross-entropy of ``[q.k, q.queue] / temperature`` with the
    positive first (InfoNCE, :func:`~metricssl.losses.infonce.info_nce`). Afterwards the
    batch's keys, gathered from every rank, replace the oldest entries of the queue (a
    registered buffer, so it is checkpointed). The queue's position and fill level are also
    buffers, with host copies (:class:`~metricssl.ssl.counters.HostCounters`): a step reads no
    number back from the device.
    ``symmetric=True`` also uses view 2 as query and view 1 as key (MoCo v3's symmetrised
    loss; twice the compute).

    Args:
        backbone: images -> features.
        projection_head: features -> projections.
        queue_size: number of negative keys kept (a multiple of the global batch size keeps
            the queue's write position aligned, as in the paper, but any size works).
        temperature: InfoNCE temperature (0.2 in MoCo v2).
        momentum: key encoder momentum (0.99 here, suited to short runs; the paper's 0.999
            assumes hundreds of ImageNet epochs).
        symmetric: symmetrise the loss.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.moco import MoCo
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = MoCo(backbone, nn.Linear(32, 16), queue_size=64)
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> method.on_step_end(1, 100)  # momentum update of the key encoder
    """

    name = "moco"
    min_batch_size = 1

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        queue_size: int = MoCoConfig.queue_size,
        temperature: float = MoCoConfig.temperature,
        momentum: float = MoCoConfig.momentum,
        symmetric: bool = MoCoConfig.symmetric,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        MoCoConfig.check(
            queue_size=queue_size, temperature=temperature, momentum=momentum, symmetric=symmetric
        )
        self.projection_head = projection_head
        self.key_backbone = momentum_copy(backbone)
        self.key_projection_head = momentum_copy(projection_head)
        self.queue_size = queue_size
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.symmetric = symmetric
        # The queue starts empty: `queue_filled` counts valid rows, so the first steps contrast
        # against real keys only (no random vectors as fake negatives).
        self.register_buffer("queue", torch.zeros(0))
        self.register_counter("queue_ptr")
        self.register_counter("queue_filled")

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection_head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def _key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_projection_head(self.key_backbone(x)), dim=1)

    def _infonce(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor):
        # MoCo v2 contrasts each query with its own key and the queue only, not with the
        # batch's other keys (MoCo v3 does).
        return info_nce(
            q, k, temperature=self.temperature, extra_keys=negatives, batch_negatives=False
        )

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        v1, v2 = batch.views[0], batch.views[1]
        q1 = self._query(v1)
        if self.queue.ndim == 2:
            # A copy: the queue is rewritten below, after the logits that use it.
            negatives = self.queue[: self.counter("queue_filled")].clone()
        else:
            negatives = q1.new_zeros(0, q1.shape[1], dtype=torch.float32)
        k2 = self._key(v2)
        loss = self._infonce(q1, k2, negatives)
        keys = [k2]
        if self.symmetric:
            q2, k1 = self._query(v2), self._key(v1)
            loss = 0.5 * (loss + self._infonce(q2, k1, negatives))
            keys.append(k1)
        for k in keys:
            self._enqueue(k)
        return {"loss": loss, "queue_filled": self.queue_filled.detach().float()}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write every rank's keys (in rank order) over the oldest queue entries."""
        keys = gather_with_grad(keys.detach().float())
        if self.queue.ndim != 2:
            self.queue = keys.new_zeros(self.queue_size, keys.shape[1])
        ring_enqueue(self, self.queue, keys)

    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projection_head, self.projection_head, self.momentum)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The queue's width is known only after the first batch: take the stored shape.
        adopt_stored_shapes(self, state_dict, prefix, ["queue"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
