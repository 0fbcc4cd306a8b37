"""MemoryBank: one L2-normalised vector per training image, refreshed by a moving average."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.distributed import gather_with_grad
from ..core.validation import check_number
from ..losses.infonce import info_nce
from ..models.batchnorm import frozen_running_stats
from .datasets import ImageData

BANK_INITS = ("random", "features")
_FILL_BATCH_SIZE = 512


@torch.no_grad()
def start_from_features(method: nn.Module, epoch: int, data: ImageData) -> None:
    """At the first epoch of a fresh run, fill ``method.memory`` with
    ``method.projection_head(method.backbone(x))`` of every clean training image, when
    ``method.bank_init == "features"`` (NPID's and PIRL's ``on_epoch_start``).

    A random bank gives every image a meaningless positive until its row has been refreshed
    a few times, so the first epochs only spread the embeddings apart. The network stays in
    training mode, BatchNorm normalising each batch by its own statistics as in a training
    step (an untrained network's running statistics are still 0 and 1), without folding them
    into the running ones. A resumed run starts later than epoch 0 and keeps its bank.
    """
    if epoch != 0 or method.bank_init != "features":
        return
    device = method.memory.bank.device
    with frozen_running_stats(method):
        features = [
            method.projection_head(method.backbone(method.clean_images(images.to(device))))
            for images, _ in data.batches(torch.arange(len(data)), _FILL_BATCH_SIZE)
        ]
    method.memory.fill(torch.cat(features))


class MemoryBank(nn.Module):
    """A (num_samples, dim) bank of unit vectors, one per training image, as in NPID and PIRL.

    Row ``i`` starts as a random unit vector and, each time image ``i`` is in a batch, becomes
    ``normalize(momentum * bank[i] + (1 - momentum) * value)`` (Wu et al., CVPR 2018, section
    3.2; momentum 0.5). Under torch.distributed the batch's indices and values are gathered
    from every rank first, so every rank holds the same bank. The bank is a registered buffer:
    it is in ``state_dict()`` and a checkpoint resumes it exactly.

    Args:
        num_samples: rows (images in the training split), >= 1.
        dim: width of each vector, >= 1.
        momentum: weight of the old entry in each update, in [0, 1).

    Example:
        >>> import torch
        >>> from metricssl.ssl.memory_bank import MemoryBank
        >>> bank = MemoryBank(num_samples=100, dim=8)
        >>> bank.update(torch.tensor([3, 7]), torch.randn(2, 8))
        >>> bank.bank.norm(dim=1).allclose(torch.ones(100))
        True
    """

    def __init__(self, num_samples: int, dim: int, momentum: float = 0.5):
        super().__init__()
        check_number("num_samples", num_samples, low=1, integer=True)
        check_number("dim", dim, low=1, integer=True)
        check_number("momentum", momentum, low=0, high=1, high_inclusive=False)
        self.num_samples = int(num_samples)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.register_buffer("bank", F.normalize(torch.randn(self.num_samples, self.dim), dim=1))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """The bank's rows at ``indices`` (a copy, without gradient)."""
        return self.bank[indices]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, values: torch.Tensor) -> None:
        """Move rows ``indices`` towards ``values`` (every rank's, under torch.distributed)."""
        if indices.shape[0] != values.shape[0] or values.shape[1:] != (self.dim,):
            raise ValueError(
                f"update needs (B,) indices and (B, {self.dim}) values, got "
                f"{tuple(indices.shape)} and {tuple(values.shape)}"
            )
        indices = gather_with_grad(indices.to(self.bank.device))
        values = gather_with_grad(values.detach().to(self.bank))
        mixed = self.momentum * self.bank[indices] + (1 - self.momentum) * values
        self.bank[indices] = F.normalize(mixed, dim=1)

    def info_nce(
        self,
        v: torch.Tensor,
        indices: torch.Tensor,
        negative_indices: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        """InfoNCE of unit rows ``v`` (B, dim): row ``i``'s positive is ``bank[indices[i]]``,
        its negatives the rows ``negative_indices`` (shared by the batch); the mean over the
        batch, through :func:`~metricssl.losses.infonce.info_nce` (float32, chunked for a
        large number of negatives)."""
        self._check_width(v)
        return info_nce(
            v,
            self.bank[indices],
            temperature=temperature,
            extra_keys=self.bank[negative_indices],
            batch_negatives=False,
        )

    def logits(
        self,
        v: torch.Tensor,
        indices: torch.Tensor,
        negative_indices: torch.Tensor,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(positive, negatives)``: ``v . bank[indices] / T`` (B,) and ``v . bank[j] / T``
        for each ``j`` of ``negative_indices`` (B, K); ``v`` are unit rows (B, dim). For
        estimators other than InfoNCE (NPID's NCE)."""
        self._check_width(v)
        # In the bank's dtype (float32): half-precision rows from an autocast region would
        # otherwise meet the float32 bank in a matmul that refuses mixed dtypes.
        v = v.to(self.bank.dtype)
        positive = (v * self.bank[indices]).sum(dim=1) / temperature
        negatives = v @ self.bank[negative_indices].t() / temperature
        return positive, negatives

    def similarity(self, v: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The mean of ``v . bank[indices]`` over the batch (without gradient): how close the
        embeddings are to their own rows, logged by NPID and PIRL."""
        return (v.detach().to(self.bank.dtype) * self.bank[indices]).sum(dim=1).mean()

    def _check_width(self, v: torch.Tensor) -> None:
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(
                f"the embeddings have shape {tuple(v.shape)}, but the bank holds "
                f"embedding_dim={self.dim} rows: the head must output {self.dim} features"
            )

    @torch.no_grad()
    def fill(self, values: torch.Tensor) -> None:
        """Set every row to the normalised ``values`` (num_samples, dim)."""
        if values.shape != self.bank.shape:
            raise ValueError(
                f"fill needs {tuple(self.bank.shape)} values, got {tuple(values.shape)}"
            )
        self.bank.copy_(F.normalize(values.to(self.bank), dim=1))

    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` row indices drawn uniformly with replacement (the noise distribution),
        on the bank's device; with a ``generator``, drawn on its device (a CPU generator
        serves a bank on a GPU)."""
        draw_on = generator.device if generator is not None else self.bank.device
        drawn = torch.randint(self.num_samples, (count,), device=draw_on, generator=generator)
        return drawn.to(self.bank.device)
