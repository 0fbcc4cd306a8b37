"""TiCo's loss: transformation invariance plus contrast against a running covariance matrix."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import common as c_f
from ..core.distributed import gather_with_grad
from ..core.validation import ArgumentError, check_bool, check_embeddings, check_number


class TiCoLoss(nn.Module):
    """Transformation invariance and covariance contrast (lightly's ``TiCoLoss``).

    Zhu, Moraes, Karakulak, Sobol, Canziani and LeCun, "TiCo: Transformation Invariance and
    Covariance Contrast for Self-Supervised Visual Representation Learning", 2022
    (arXiv:2206.10698). With ``z_a`` and ``z_b`` the two views' projections scaled to unit
    length (N x D) and ``C`` a running covariance of ``z_a`` (D x D)::

        C <- beta * C + (1 - beta) * z_a^T z_a / N
        loss = 1 - mean_i <z_a,i, z_b,i> + rho * mean_i z_a,i^T C z_a,i

    The first term pulls the two views of an image together; the second pushes each
    embedding away from the directions the recent batches occupied, which the paper shows is
    a contrastive loss against an implicit memory bank of every past batch (its weights
    decaying as ``beta``). ``C`` is computed from ``z_a`` only, without gradient, and the
    loss uses the updated ``C`` (this batch included). The constant 1 does not change the
    gradient; it is lightly's, so the values agree.

    ``C`` is a buffer (in ``state_dict()``, so a checkpoint resumes it), zeros of shape
    (D, D) from the first call on; before that it is empty and takes a stored shape on
    ``load_state_dict``. Computed in float32 for half-precision inputs, outside autocast.

    Distributed training: with ``gather_distributed=True`` and an initialised process group,
    both views are all-gathered with gradient (:func:`~metricssl.core.distributed.
    gather_with_grad`), so ``C`` and the loss are those of the global batch, every rank keeps
    the same ``C``, and DDP's averaged gradients equal the single-process ones.

    Args:
        beta: the momentum of ``C``'s moving average, in [0, 1] (0.9 in the paper).
        rho: the weight of the covariance contrast term (8.0, the paper's ImageNet setting
            and lightly's default).
        gather_distributed: compute the loss over all ranks' rows (see above).

    Example:
        >>> import torch
        >>> from metricssl.losses.tico_loss import TiCoLoss
        >>> loss_fn = TiCoLoss()
        >>> z_a = torch.randn(16, 32, requires_grad=True)
        >>> loss = loss_fn(z_a, torch.randn(16, 32))
        >>> loss.backward()
        >>> loss_fn.C.shape
        torch.Size([32, 32])
    """

    C: torch.Tensor

    def __init__(self, beta: float = 0.9, rho: float = 8.0, gather_distributed: bool = False):
        super().__init__()
        check_number("beta", beta, low=0, high=1)
        check_number("rho", rho, low=0)
        check_bool("gather_distributed", gather_distributed)
        self.beta = float(beta)
        self.rho = float(rho)
        self.gather_distributed = gather_distributed
        # Empty until the first batch gives the width D.
        self.register_buffer("C", torch.zeros(0, 0))

    def forward(
        self, z_a: torch.Tensor, z_b: torch.Tensor, update_covariance_matrix: bool = True
    ) -> torch.Tensor:
        """The loss of views ``z_a`` (N x D, the online branch: it updates ``C``) and ``z_b``
        (N x D, rows aligned); ``C`` keeps the update unless ``update_covariance_matrix`` is
        False."""
        check_embeddings(z_a, "z_a")
        check_embeddings(z_b, "z_b")
        if z_a.shape != z_b.shape:
            raise ArgumentError(
                f"z_a and z_b must be two views of the same batch, with the same shape; got "
                f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
            )
        check_bool("update_covariance_matrix", update_covariance_matrix)
        dtype = z_a.dtype
        acc = c_f.accumulation_dtype(dtype)
        a, b = z_a.to(acc), z_b.to(acc)
        if self.gather_distributed:
            a, b = gather_with_grad(a), gather_with_grad(b)
        n, d = a.shape
        if n < 2:
            raise ArgumentError(
                f"TiCoLoss needs at least 2 rows (the covariance of one row is no contrast), "
                f"got {n}"
            )
        if self.C.numel() == 0:
            self.C = torch.zeros(d, d, dtype=acc, device=a.device)
        elif self.C.shape != (d, d):
            raise ArgumentError(
                f"z_a has {d} dimensions but the covariance matrix C was built for "
                f"{self.C.shape[0]}"
            )
        with torch.autocast(a.device.type, enabled=False):
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
            batch_cov = a.detach().T @ a.detach() / n
            cov = self.beta * self.C.to(acc) + (1.0 - self.beta) * batch_cov
            invariance = 1.0 - (a * b).sum(dim=1).mean()
            contrast = ((a @ cov) * a).sum(dim=1).mean()
            loss = invariance + self.rho * contrast
        if update_covariance_matrix:
            self.C.copy_(cov)
        return loss.to(dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        c_f.adopt_stored_shapes(self, state_dict, prefix, ["C"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, rho={self.rho}, gather_distributed={self.gather_distributed}"
