"""NCALoss: neighbourhood components analysis, a softmax over the reference set per query."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..core import chunking
from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError, check_number
from ..distances import BaseDistance, LpDistance
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels


def _log_space_rows(x: torch.Tensor, pos: torch.Tensor, hp: torch.Tensor):
    """``logsumexp(x) - logsumexp(x over pos)`` per row and its gradient w.r.t. ``x``.

    The exact (slower) form, for rows whose positives are so improbable that their
    softmax probabilities underflow.
    """
    lse_all = torch.logsumexp(x, dim=1, keepdim=True)
    x_pos = x.masked_fill(~pos, float("-inf"))
    # Rows without positives: a finite stand-in, so no -inf - -inf NaN appears.
    lse_pos = torch.logsumexp(x_pos, dim=1, keepdim=True).masked_fill(~hp[:, None], 0)
    grad = torch.exp(x - lse_all) - torch.exp(x_pos - lse_pos)
    return (lse_all - lse_pos).squeeze(1), grad


class _NCARowLosses(torch.autograd.Function):
    """Per query row ``i``: ``-w_i * log(sum_{j positive} softmax_j(x_i))``, ``x = scale * mat``.

    The diagonal is left out when the reference set is the query set. This is PML's NCA
    term. Rows are processed in blocks sized by the memory budget, in float32 for half
    inputs, with torch's fused softmax; the gradient with respect to ``mat``
    (``softmax_all - softmax_over_positives``, times ``w_i * scale``) is written while each
    block is at hand, so backward is a single multiply and only ``mat`` and that gradient
    (both N x M) outlive the forward. Rows whose positive probability would underflow are
    redone in log space, so their loss is exact (PML drops such rows).

    Returns the row losses (0 for rows without a positive) and the bool mask of rows that
    have a positive.
    """

    @staticmethod
    def forward(ctx, mat, labels, ref_labels, exclude_self, scale, weights):
        n, m = mat.shape
        acc = c_f.accumulation_dtype(mat.dtype)
        # Below this positive mass the probabilities lose precision (subnormals) and 1 / mass
        # could overflow in the gradient: such rows are redone in log space.
        low_mass = torch.finfo(acc).tiny ** 0.5
        losses = torch.zeros(n, dtype=acc, device=mat.device)
        has_pos = torch.zeros(n, dtype=torch.bool, device=mat.device)
        need_grad = ctx.needs_input_grad[0]
        grad = torch.empty((n, m), dtype=acc, device=mat.device) if need_grad else None
        item = torch.empty((), dtype=acc).element_size()
        for rows in chunking.row_chunks(n, m * (4 * item + 1), device=mat.device):
            x = mat[rows].to(acc) * scale
            # The positives as a 0/1 float matrix: masked sums become row dot products,
            # several times faster on a CPU than where/any over a bool mask.
            pos = (labels[rows].unsqueeze(1) == ref_labels.unsqueeze(0)).to(acc)
            if exclude_self:
                local = torch.arange(x.shape[0], device=x.device)
                x[local, local + rows.start] = float("-inf")
                pos[local, local + rows.start] = 0
            hp = pos.sum(dim=1) > 0
            w = weights[rows].to(acc) * hp
            prob = torch.softmax(x, dim=1)
            sum_pos = torch.linalg.vecdot(prob, pos).masked_fill_(~hp, 1)
            losses[rows] = -sum_pos.log() * w
            has_pos[rows] = hp
            if need_grad:
                a = (w * scale).unsqueeze(1)
                b = a / sum_pos.unsqueeze(1)
                # (a - b * pos) * prob, written into the gradient without a temporary.
                block = grad[rows]
                torch.mul(pos, -b, out=block)
                block.add_(a).mul_(prob)
            underflow = hp & (sum_pos < low_mass)
            # A host read per block: rows whose mass underflows are recomputed in log space,
            # and which rows those are decides the shapes of that work.
            if bool(underflow.any()):
                redo = torch.where(underflow)[0]
                x = mat[rows][redo].to(acc) * scale
                if exclude_self:
                    x[torch.arange(len(redo), device=x.device), redo + rows.start] = float("-inf")
                exact, g = _log_space_rows(x, pos[redo].bool(), hp[redo])
                losses[redo + rows.start] = exact * w[redo]
                if need_grad:
                    grad[redo + rows.start] = g * (w[redo] * scale).unsqueeze(1)
        ctx.save_for_backward(grad)
        ctx.mat_dtype = mat.dtype
        ctx.mark_non_differentiable(has_pos)
        return losses, has_pos

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_losses, _grad_has_pos):
        (grad,) = ctx.saved_tensors
        grad_mat = (grad * grad_losses.to(grad.dtype)[:, None]).to(ctx.mat_dtype)
        return grad_mat, None, None, None, None, None


class NCALoss(BaseMetricLossFunction):
    """Neighbourhood components analysis loss (PML's ``NCALoss``).

    Goldberger, Roweis, Hinton and Salakhutdinov, "Neighbourhood Components Analysis",
    NeurIPS 2004. Each query ``i`` picks a reference ``j`` with probability
    ``softmax_j(softmax_scale * s_ij)`` (``s`` the similarity; for a distance, its negation;
    never ``i`` itself when the reference set is the batch). The loss is
    ``-log(probability of picking a same-class reference)``, one value per query that has a
    same-class reference, weighted by how often a miner's ``indices_tuple`` lists the query.

    Same arguments, values and gradients as PML. The softmax is taken over row blocks sized
    by the memory budget, in float32 for half inputs, and the gradient is formed blockwise in
    the forward pass: only the query-by-reference matrix and its gradient are kept, so a
    large ``ref_emb`` (a memory bank) costs two N x M buffers. With a
    Mean/Sum/Threshold/AvgNonZero reducer the rows are reduced on the spot. No double
    backward. (Checking for underflowing rows costs one host sync per block on CUDA, as
    PML's boolean indexing does.)

    Deviations from PML: PML drops a query whose same-class probability underflows to 0 in
    the input dtype (its loss would be above ~87 in float32); here its exact (large, finite)
    loss is kept, computed in log space. A batch where no query has a same-class reference gives a zero loss (that
    back-propagates) where PML's MeanReducer averages an empty tensor into NaN. As in PML, a
    batch of one embedding gives a zero loss, even with ``ref_emb``.

    Args:
        softmax_scale: multiplies the similarities before the softmax (> 0).
        distance: LpDistance(power=2) (squared Euclidean, normalized embeddings) by default.
        reducer: MeanReducer by default (over the queries with a same-class reference).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.nca_loss import NCALoss
        >>> loss_fn = NCALoss(softmax_scale=1)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        softmax_scale: float = 1,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("softmax_scale", softmax_scale, low=0, low_inclusive=False)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.softmax_scale = softmax_scale
        self.add_to_recordable_attributes(list_of_names=["softmax_scale"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        require_labels(labels, type(self).__name__)
        if ref_emb is not embeddings and ref_labels is None:
            raise ArgumentError(f"{type(self).__name__}: ref_labels is required with ref_emb")
        if len(embeddings) <= 1:
            return self.zero_losses()
        return self.nca_computation(embeddings, ref_emb, labels, ref_labels, indices_tuple)

    def nca_computation(self, query, reference, query_labels, reference_labels, indices_tuple):
        """The NCA term of every query against ``reference`` (PML's method of the same name)."""
        acc = c_f.accumulation_dtype(query.dtype)
        # With a separate reference set only the anchors of the tuple are queries.
        weights = lmu.convert_to_weights(
            indices_tuple, query_labels, dtype=acc, using_ref=query is not reference
        )
        mat = self.distance(query, reference)
        scale = self.softmax_scale if self.distance.is_inverted else -self.softmax_scale
        losses, has_pos = _NCARowLosses.apply(
            mat, query_labels, reference_labels, query is reference, scale, weights
        )
        return self.row_loss_dict(losses, has_pos, query)

    def row_loss_dict(self, losses, keep, like):
        """The loss dictionary of one loss per query row, over the rows where ``keep``.

        Reduced on the spot when the reducer allows it (no boolean indexing, no host sync);
        otherwise PML's per-element losses and indices. ``keep`` None keeps every row.
        """
        fused = self.fused_reduction("loss")
        if fused is not None:
            total, count = fused.partial(losses, keep)
            entry = fused.loss_entry(total, count, like)
        else:
            indices = c_f.torch_arange_from_size(like)
            if keep is not None:
                losses, indices = losses[keep], indices[keep]
            entry = {"losses": losses, "indices": indices, "reduction_type": "element"}
        entry["losses"] = entry["losses"].to(like.dtype)
        return {"loss": entry}

    def get_default_distance(self) -> BaseDistance:
        return LpDistance(power=2)
