"""MMCR's loss: the nuclear norm of the matrix of each image's mean view embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import common as c_f
from ..core.distributed import gather_with_grad
from ..core.validation import ArgumentError, check_bool, check_embeddings, check_number


class MMCRLoss(nn.Module):
    """Maximum manifold capacity: spread the images' centroids, shrink each image's views.

    Yerxa, Kuang, Simoncelli and Chung, "Learning Efficient Coding of Natural Images with
    Maximum Manifold Capacity Representations", NeurIPS 2023. Each of the ``k`` views of an
    image is scaled to unit length; ``Z_i`` (k x D) holds image ``i``'s views and
    ``c_i = mean(Z_i)`` their centroid; ``C`` (B x D) stacks the centroids. Then::

        loss = -||C||_* + lmda * sum_i ||Z_i||_* / B

    with ``||.||_*`` the nuclear norm (the sum of singular values). The centroids of unit
    vectors are at most of length 1 and shorter the more an image's views disagree, so a
    large ``||C||_*`` needs both invariant views and centroids spread over many directions.
    The per-image term (``lmda``; 0, the authors' default, drops it) compresses each image's
    manifold further.

    Called as lightly's ``MMCRLoss``: ``loss(online, momentum)`` with two (B, k, D) tensors
    (the online and momentum encoders' projections of the same ``k`` views): the two are
    joined into ``2k`` views per image. ``momentum`` may be left out (no momentum encoder,
    the authors' CIFAR setup). Unlike lightly, the rows are scaled to unit length here, as in
    the paper and the authors' code (without it the loss has no lower bound); for unit-length
    inputs the values agree. The default ``lmda`` is the authors' 0 (lightly's is 5e-3).

    Singular values are computed in float32 for half-precision inputs, outside autocast.

    Distributed training: with ``gather_distributed=True`` and an initialised process group,
    every rank's images are all-gathered with gradient (:func:`~metricssl.core.distributed.
    gather_with_grad`), so ``C`` is the global batch's centroid matrix; every rank returns the
    global loss and DDP's averaged gradients equal the single-process ones.

    Args:
        lmda: the weight of the per-image nuclear norms, >= 0.
        gather_distributed: compute the loss over all ranks' images (see above).

    Example:
        >>> import torch
        >>> from metricssl.losses.mmcr_loss import MMCRLoss
        >>> loss_fn = MMCRLoss()
        >>> views = torch.randn(8, 4, 16, requires_grad=True)  # 8 images, 4 views each
        >>> loss = loss_fn(views)
        >>> loss.backward()
        >>> bool(loss < 0)
        True
    """

    def __init__(self, lmda: float = 0.0, gather_distributed: bool = False):
        super().__init__()
        check_number("lmda", lmda, low=0)
        check_bool("gather_distributed", gather_distributed)
        self.lmda = float(lmda)
        self.gather_distributed = gather_distributed

    def forward(self, online: torch.Tensor, momentum: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``online`` (B, k, D) views, joined with ``momentum`` (B, k, D) if given."""
        z = _check_views("online", online)
        if momentum is not None:
            _check_views("momentum", momentum)
            if momentum.shape != online.shape:
                raise ArgumentError(
                    f"online and momentum must hold the same views, with the same shape; got "
                    f"{tuple(online.shape)} and {tuple(momentum.shape)}"
                )
            if momentum.dtype != online.dtype:
                raise TypeError(f"online is {online.dtype} but momentum is {momentum.dtype}")
            z = torch.cat([online, momentum], dim=1)
        dtype = z.dtype
        z = z.to(c_f.accumulation_dtype(dtype))
        if self.gather_distributed:
            z = gather_with_grad(z)
        with torch.autocast(z.device.type, enabled=False):
            z = F.normalize(z, dim=2)
            loss = -torch.linalg.svdvals(z.mean(dim=1)).sum()
            if self.lmda > 0:
                loss = loss + self.lmda * torch.linalg.svdvals(z).sum() / z.shape[0]
        return loss.to(dtype)

    def extra_repr(self) -> str:
        return f"lmda={self.lmda}, gather_distributed={self.gather_distributed}"


def _check_views(name: str, views) -> torch.Tensor:
    check_embeddings(views, name, ndim=None)
    if views.ndim != 3 or views.shape[1] == 0 or views.shape[2] == 0:
        raise ArgumentError(
            f"{name} must be a 3D tensor of shape (batch_size, n_views, embedding_size), "
            f"got shape {tuple(views.shape)}"
        )
    return views
