"""VICRegLoss: variance-invariance-covariance regularisation of two views (PML's VICRegLoss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core.distributed import gather_with_grad
from ..core.validation import ArgumentError, check_bool, check_number
from ..reducers import BaseReducer
from .two_view_loss import TwoViewLoss, check_batch_statistics_size


def off_diagonal(mat: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, as a (D - 1, D + 1) view (no copy).

    Dropping the last entry of the flattened matrix and reading it D + 1 at a time puts each
    diagonal entry at the start of a row; column 0 is then the diagonal, the rest is not.
    """
    d = mat.shape[0]
    return mat.flatten()[:-1].view(d - 1, d + 1)[:, 1:]


class VICRegLoss(TwoViewLoss):
    """VICReg (PML's ``VICRegLoss``): invariance + variance + covariance terms on two views.

    Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", ICLR 2022. For views ``Z`` and ``Z'`` (N x D)::

        L = lambda * s(Z, Z') + mu * [v(Z) + v(Z')] + nu * [c(Z) + c(Z')]

    with ``s`` the mean squared difference of the two views, ``v(Z) = mean_d relu(1 -
    sqrt(Var(Z_d) + eps))`` (halved per view, as in PML) and ``c(Z)`` the sum of squared
    off-diagonal entries of the covariance matrix divided by ``D``.

    The loss dictionary is PML's, so reducers apply in the same way: ``invariance_loss`` (one
    element per sample), ``variance_loss1`` / ``variance_loss2`` (one element per dimension)
    and ``covariance_loss`` (already reduced). With the default MeanReducer the value equals
    PML's. Each view is centred once; when the batch is smaller than the dimension (N < D,
    the usual case with VICReg's wide projector) the squared covariances are summed through
    the N x N Gram matrix (``||Z^T Z||_F = ||Z Z^T||_F``), which costs N^2 D instead of
    N D^2. Statistics are computed in float32 for half-precision inputs and under autocast.

    Call it as ``loss(embeddings, ref_emb=ref_emb)`` (PML) or ``loss(z1, z2)``. Without
    ``ref_emb``, ``ref_emb = embeddings`` (PML's behaviour). A batch of one row is an error
    (PML returns NaN: the variance of one sample is undefined).

    Distributed training: with ``gather_distributed=True`` and an initialised process group,
    both views are all-gathered with gradient (:func:`~metricssl.utils.distributed.
    gather_with_grad`) so variance and covariance are those of the global batch; every rank
    returns the global loss and DDP's averaged gradients equal the single-process ones.

    Args:
        invariance_lambda: weight ``lambda`` of the invariance term.
        variance_mu: weight ``mu`` of the variance terms.
        covariance_v: weight ``nu`` of the covariance terms.
        eps: added to the variance before the square root.
        reducer: MeanReducer per sub-loss by default.
        collect_stats: as in every loss.
        gather_distributed: compute the loss over all ranks' rows (see above).
        distance, embedding_regularizer, embedding_reg_weight: accepted for PML's signature;
            like PML, a distance or an embedding regularizer is a ``ValueError``.

    Example:
        >>> import torch
        >>> from metricssl.losses.vicreg_loss import VICRegLoss
        >>> loss_fn = VICRegLoss()
        >>> z1, z2 = torch.randn(32, 16), torch.randn(32, 16)
        >>> loss = loss_fn(z1, ref_emb=z2)
    """

    ref_emb_required = False

    def __init__(
        self,
        invariance_lambda: float = 25,
        variance_mu: float = 25,
        covariance_v: float = 1,
        eps: float = 1e-4,
        distance=None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
        gather_distributed: bool = False,
    ):
        if distance is not None:
            raise ArgumentError("VICRegLoss cannot use a distance function (distance must be None)")
        if embedding_regularizer is not None:
            raise ArgumentError(
                "VICRegLoss cannot use a regularizer (embedding_regularizer must be None)"
            )
        check_number("invariance_lambda", invariance_lambda, low=0)
        check_number("variance_mu", variance_mu, low=0)
        check_number("covariance_v", covariance_v, low=0)
        check_number("eps", eps, low=0)
        check_bool("gather_distributed", gather_distributed)
        super().__init__(
            reducer=reducer, embedding_reg_weight=embedding_reg_weight, collect_stats=collect_stats
        )
        self.invariance_lambda = invariance_lambda
        self.variance_mu = variance_mu
        self.covariance_v = covariance_v
        self.eps = eps
        self.gather_distributed = gather_distributed

    def _sub_loss_names(self):
        return ["invariance_loss", "variance_loss1", "variance_loss2", "covariance_loss"]

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        dtype = embeddings.dtype
        acc = c_f.accumulation_dtype(dtype)
        emb, ref = embeddings.to(acc), ref_emb.to(acc)
        if self.gather_distributed:
            emb, ref = gather_with_grad(emb), gather_with_grad(ref)
        check_batch_statistics_size(emb.shape[0], "VICRegLoss")

        # Under AMP the D x D covariance would be computed in half precision: keep it in the
        # accumulation dtype.
        with torch.autocast(emb.device.type, enabled=False):
            invariance = self.invariance_lambda * self.invariance_loss(emb, ref)
            var1, cov1 = self._variance_and_covariance(emb)
            var2, cov2 = self._variance_and_covariance(ref)
        covariance = self.covariance_v * (cov1 + cov2)
        sample_ids = c_f.torch_arange_from_size(invariance)
        dim_ids = c_f.torch_arange_from_size(var1)
        return {
            "invariance_loss": {
                "losses": invariance.to(dtype),
                "indices": sample_ids,
                "reduction_type": "element",
            },
            "variance_loss1": {
                "losses": (self.variance_mu * var1).to(dtype),
                "indices": dim_ids,
                "reduction_type": "element",
            },
            "variance_loss2": {
                "losses": (self.variance_mu * var2).to(dtype),
                "indices": dim_ids,
                "reduction_type": "element",
            },
            "covariance_loss": {
                "losses": covariance.to(dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            },
        }

    # PML's per-term methods, for code that calls them directly (unweighted, as in PML).

    def invariance_loss(self, emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared difference of the two views, shape (N,)."""
        return torch.mean((emb - ref_emb) ** 2, dim=1)

    def variance_loss(self, emb: torch.Tensor, ref_emb: torch.Tensor):
        """Per-dimension hinge on each view's std, halved: two tensors of shape (D,)."""
        return tuple(F.relu(1 - torch.sqrt(z.var(dim=0) + self.eps)) / 2 for z in (emb, ref_emb))

    def covariance_loss(self, emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        """Sum over both views of the squared off-diagonal covariances divided by D."""
        return self._variance_and_covariance(emb)[1] + self._variance_and_covariance(ref_emb)[1]

    def _variance_and_covariance(self, z: torch.Tensor):
        """Per-dimension hinge on the std (halved, as in PML) and the covariance penalty."""
        n, d = z.shape
        centred = z - z.mean(dim=0)
        var = centred.pow(2).sum(dim=0) / (n - 1)
        variance = F.relu(1 - torch.sqrt(var + self.eps)) / 2
        if n < d:
            # ||X^T X||_F = ||X X^T||_F: the N x N Gram matrix costs N^2 D instead of N D^2.
            # The covariance has rank < N < D, so its off-diagonal mass is at least about
            # D^2 / N and subtracting the diagonal loses no precision.
            gram = centred @ centred.T
            total = gram.pow(2).sum() / (n - 1) ** 2
            off = (total - var.pow(2).sum()).clamp_min(0)
        else:
            cov = (centred.T @ centred) / (n - 1)
            off = off_diagonal(cov).pow(2).sum()
        return variance, off / d
