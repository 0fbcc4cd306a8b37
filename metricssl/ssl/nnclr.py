"""NNCLR: the positive of each view is its nearest neighbour in a support set of past
projections."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import gather_with_grad
from ..losses.infonce import info_nce
from .counters import HostCounters
from .method import Batch, MethodConfig, SSLMethod, adopt_stored_shapes, param
from .queue import ring_enqueue


@dataclass(frozen=True)
class NNCLRConfig(MethodConfig):
    """NNCLR's hyper-parameters: head widths, the support set's size and the temperature.

    Example:
        >>> from metricssl.ssl.nnclr import NNCLRConfig
        >>> NNCLRConfig().queue_size, NNCLRConfig().temperature
        (8192, 0.1)
    """

    proj_hidden_dim: int = param(1024, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    pred_hidden_dim: int = param(1024, low=1, integer=True)
    queue_size: int = param(8192, low=1, integer=True)
    temperature: float = param(0.1, low=0, low_inclusive=False)


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    # Half-precision projections (autocast) are looked up and stored in float32; float64
    # stays float64.
    return t.to(torch.promote_types(t.dtype, torch.float32))


@torch.no_grad()
def nearest_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The row of ``support`` with the largest cosine similarity to each row of ``z``.

    ``z``: (N, D); ``support``: (M, D) with M >= 1, unit rows. Ties go to the lowest index
    (``argmax``'s rule). No gradient: NNCLR's neighbours are constants.

    Example:
        >>> import torch
        >>> support = torch.eye(3)
        >>> nearest_neighbours(torch.tensor([[0.1, 2.0, 0.3]]), support)
        tensor([[0., 1., 0.]])
    """
    z, support = _full_precision(z), _full_precision(support)
    scores = F.normalize(z, dim=1) @ support.to(z.dtype).T
    return support[scores.argmax(dim=1)]


class NNCLR(HostCounters, SSLMethod):
    """NNCLR: InfoNCE between each view's nearest neighbour in a support set and the other
    view's prediction.

    Dwibedi, Aytar, Tompson, Sermanet and Zisserman, "With a Little Help from My Friends:
    Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021. Both views go
    through backbone -> projection head (``z``) -> prediction head (``p``). The support set is
    a FIFO queue of the unit projections ``z1`` of the first view of past batches. Each
    ``z`` is replaced by its nearest neighbour ``NN(z)`` (cosine, no gradient) in the support
    set, and the loss is the symmetric
    ``0.5 * (ctr(NN(z1), p2) + ctr(NN(z2), p1))``, where ``ctr`` is InfoNCE
    (:func:`~metricssl.losses.infonce.info_nce`) of each neighbour against the predictions of
    every image of the global batch (gathered from every process with gradient), its own
    image's prediction the positive. After the loss the batch's ``z1``, gathered from every
    process in rank order, replace the oldest entries of the support set. Before anything is
    stored (the first step) a projection is its own neighbour. The support set, its write
    position and fill level are buffers, so a checkpoint resumes exactly; the counters have
    host copies (:class:`~metricssl.ssl.counters.HostCounters`): a step reads nothing back
    from the device. The paper's augmentations are BYOL's (the registry's recipe).

    Args:
        backbone: images -> features.
        projection_head: features -> projections ``z``.
        prediction_head: ``z`` -> predictions ``p`` (same width).
        queue_size: projections kept in the support set (the paper's 98,304 for ImageNet;
            8192 by default here, 32 batches of 256, for a 60,000-image set).
        temperature: InfoNCE temperature (the paper's 0.1).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.nnclr import NNCLR
        >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))
        >>> method = NNCLR(backbone, nn.Linear(32, 16), nn.Linear(16, 16), queue_size=64)
        >>> out = method.training_step(Batch([torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)]))
        >>> out["loss"].backward()
        >>> int(method.queue_filled)
        8
    """

    name = "nnclr"
    min_batch_size = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        prediction_head: nn.Module,
        queue_size: int = NNCLRConfig.queue_size,
        temperature: float = NNCLRConfig.temperature,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        NNCLRConfig.check(queue_size=queue_size, temperature=temperature)
        self.projection_head = projection_head
        self.prediction_head = prediction_head
        self.queue_size = int(queue_size)
        self.temperature = float(temperature)
        # The width of the projections is known at the first batch; until then the support
        # set is empty and `queue_filled` counts its valid rows.
        self.register_buffer("queue", torch.zeros(0))
        self.register_counter("queue_ptr")
        self.register_counter("queue_filled")

    def support_set(self) -> torch.Tensor | None:
        """The stored unit projections in ring order (once full, the oldest sits at
        ``queue_ptr``), or None before the first batch."""
        filled = self.counter("queue_filled")
        return self.queue[:filled] if filled else None

    def neighbours(self, z: torch.Tensor) -> torch.Tensor:
        """Each projection's nearest neighbour in the support set (itself, unit and detached,
        while the set is empty)."""
        support = self.support_set()
        if support is None:
            return F.normalize(_full_precision(z.detach()), dim=1)
        return nearest_neighbours(z, support)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        # One pass for both views: BatchNorm sees the 2B images together.
        z = self.projection_head(self.backbone(torch.cat([batch.views[0], batch.views[1]])))
        p1, p2 = self.prediction_head(z).chunk(2)
        z1, z2 = z.chunk(2)
        nn1, nn2 = self.neighbours(z1), self.neighbours(z2)
        loss = 0.5 * (self.contrast(nn1, p2) + self.contrast(nn2, p1))
        self._enqueue(F.normalize(_full_precision(z1.detach()), dim=1))
        return {"loss": loss, "queue_filled": self.queue_filled.detach().float()}

    def contrast(self, neighbours: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """InfoNCE of each neighbour against every process's predictions (its own image's
        prediction the positive)."""
        return info_nce(
            neighbours, predictions, temperature=self.temperature, gather=True, normalize=True
        )

    @torch.no_grad()
    def _enqueue(self, z: torch.Tensor) -> None:
        """Write every rank's projections (in rank order) over the oldest entries."""
        z = gather_with_grad(z)
        if self.queue.ndim != 2:
            self.queue = z.new_zeros(self.queue_size, z.shape[1])
        ring_enqueue(self, self.queue, z)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The support set's width is known only after the first batch: take the stored shape.
        adopt_stored_shapes(self, state_dict, prefix, ["queue"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


__all__ = ["NNCLR", "NNCLRConfig", "nearest_neighbours"]
