"""BarlowTwinsLoss: make the cross-correlation of two views' features the identity matrix."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.distributed import gather_with_grad
from ..core.validation import check_bool, check_number
from ..reducers import BaseReducer
from .two_view_loss import TwoViewLoss, check_batch_statistics_size
from .vicreg_loss import off_diagonal


class BarlowTwinsLoss(TwoViewLoss):
    """Barlow Twins redundancy-reduction loss on two views.

    Zbontar, Jing, Misra, LeCun and Deny, "Barlow Twins: Self-Supervised Learning via
    Redundancy Reduction", ICML 2021. Each view ``Z`` (N x D) is normalised along the batch,
    ``(Z - mean) / sqrt(var + eps)`` with the biased variance (what the reference code's
    ``BatchNorm1d(affine=False)`` does), and with ``C = Z1n^T Z2n / N`` (D x D)::

        loss = scale_loss * ( sum_i (1 - C_ii)^2 + lambda_param * sum_{i != j} C_ij^2 )

    The paper uses ``lambda_param = 5e-3`` (the reference code 0.0051); an early version of
    the reference code also multiplied the loss by ``scale_loss = 0.024``. The default here is
    1 (the paper's loss). Statistics run in float32 for half-precision inputs; the loss comes
    back in the input dtype (also under autocast). When ``2 N < D`` (a wide projector, as in
    the paper) the squared entries of ``C`` are summed through N x N Gram matrices,
    ``sum C_ij^2 = <Z1n Z1n^T, Z2n Z2n^T> / N^2``, which costs 2 N^2 D instead of N D^2 and
    never forms the D x D matrix; otherwise ``C`` is formed directly.

    Call it as ``loss(z1, z2)`` or ``loss(z1, ref_emb=z2)``; rows of the two views must be
    aligned and the batch must hold at least two rows. The value is one number: it is an
    ``already_reduced`` entry, so the reducer does not change it.

    Distributed training: with ``gather_distributed=True`` and an initialised process group,
    both views are all-gathered with gradient (:func:`~metricssl.utils.distributed.
    gather_with_grad`), so normalisation and ``C`` use the global batch (as the reference
    code's SyncBatchNorm + all_reduce do); every rank returns the global loss and DDP's
    averaged gradients equal the single-process gradient on the global batch.

    Args:
        lambda_param: weight of the off-diagonal (redundancy) term.
        scale_loss: overall factor.
        eps: added to the per-feature variance before normalising.
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.
        gather_distributed: compute the loss over all ranks' rows (see above).

    Example:
        >>> import torch
        >>> from metricssl.losses.barlow_twins_loss import BarlowTwinsLoss
        >>> loss_fn = BarlowTwinsLoss(lambda_param=5e-3)
        >>> z1, z2 = torch.randn(32, 64), torch.randn(32, 64)
        >>> loss = loss_fn(z1, z2)
    """

    def __init__(
        self,
        lambda_param: float = 5e-3,
        scale_loss: float = 1.0,
        eps: float = 1e-5,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
        gather_distributed: bool = False,
    ):
        check_number("lambda_param", lambda_param, low=0)
        check_number("scale_loss", scale_loss, low=0, low_inclusive=False)
        check_number("eps", eps, low=0)
        check_bool("gather_distributed", gather_distributed)
        super().__init__(
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.lambda_param = lambda_param
        self.scale_loss = scale_loss
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.add_to_recordable_attributes(
            list_of_names=["lambda_param", "scale_loss"], is_stat=False
        )

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        dtype = embeddings.dtype
        acc = c_f.accumulation_dtype(dtype)
        z1, z2 = embeddings.to(acc), ref_emb.to(acc)
        if self.gather_distributed:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        n = z1.shape[0]
        check_batch_statistics_size(n, "BarlowTwinsLoss")
        # Under AMP the D x D matmul would run in half precision, and the sum of D^2 squared
        # entries can overflow float16: keep the whole computation in the accumulation dtype.
        with torch.autocast(z1.device.type, enabled=False):
            a, b = self._normalise(z1), self._normalise(z2)
            diagonal = (a * b).sum(dim=0) / n
            if 2 * n < z1.shape[1]:
                # sum_ij C_ij^2 = <A A^T, B B^T>_F / N^2: two N x N Gram matrices cost 2 N^2 D
                # instead of N D^2. C has rank <= N < D, so its off-diagonal mass is large
                # and subtracting the diagonal loses no precision.
                total = ((a @ a.T) * (b @ b.T)).sum() / n**2
                off = (total - diagonal.pow(2).sum()).clamp_min(0)
            else:
                off = off_diagonal(a.T @ b / n).pow(2).sum()
            loss = self.scale_loss * ((diagonal - 1).pow(2).sum() + self.lambda_param * off)
        return {
            "loss": {"losses": loss.to(dtype), "indices": None, "reduction_type": "already_reduced"}
        }

    def _normalise(self, z: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(z, dim=0, correction=0)
        return (z - mean) * torch.rsqrt(var + self.eps)
