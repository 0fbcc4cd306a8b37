"""Shared machinery of the ranking losses (SmoothAP, PNP): smoothed rank counts, input rules.

A smoothed rank asks, for an anchor ``a`` and one of its columns ``j``, how many other
columns ``k`` are ranked above ``j``, with the step function replaced by a temperature
sigmoid of ``sim[a, k] - sim[a, j]``. Over all anchors, columns and competitors that is
N x N x N work. :func:`soft_rank_counts` walks blocks of anchors sized by the memory budget
(utils/chunking) and recomputes each block in backward, so only N x N tensors outlive a
block, and it only visits the columns ``j`` a loss needs (an anchor's positives), not all N.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..core import chunking
from ..core import common as c_f
from ..core.validation import ArgumentError

# PML's PNP sigmoid clamps its exponent to this range (and so has no gradient outside it).
_EXPONENT_CLAMP = 50.0
# Terms below tiny * this are dropped: far below any sum's rounding, and kept out of the
# subnormal range even after multiplying by a small upstream gradient.
_SUBNORMAL_MARGIN = 2.0**24
# On CPU, blocks beyond this are slower, not faster: each fresh block is new pages to fault
# in (measured: 16 MiB blocks ~1.6x faster than 256 MiB at N=1024). GPUs use the budget.
_CPU_BLOCK_BYTES = 16 * 2**20


def reject_ref_emb(embeddings, labels, ref_emb, ref_labels, what: str) -> None:
    """PML's rule for losses defined within one batch: a separate reference set is an error."""
    if ref_emb is not embeddings or ref_labels is not labels:
        raise ArgumentError(f"{what} does not support ref_emb or ref_labels")


def reject_indices_tuple(indices_tuple, what: str) -> None:
    if indices_tuple is not None:
        raise ArgumentError(f"{what} does not support an indices_tuple (it uses every pair)")


def row_columns(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The True columns of each row of a bool ``mask``, in increasing order, padded.

    Returns ``(cols, valid)`` of shape (rows, k), k the largest row count; padding slots
    hold column 0 and ``valid`` False.
    """
    counts = mask.sum(dim=1)
    k = int(counts.max()) if mask.numel() else 0
    rows, cols = torch.nonzero(mask, as_tuple=True)  # row-major: each row's columns in order
    slot = torch.arange(len(rows), device=mask.device) - (torch.cumsum(counts, 0) - counts)[rows]
    out = torch.zeros(mask.shape[0], k, dtype=torch.long, device=mask.device)
    out[rows, slot] = cols
    valid = torch.arange(k, device=mask.device) < counts.unsqueeze(1)
    return out, valid


def soft_rank_counts(
    sim: torch.Tensor,
    cols: torch.Tensor,
    valid: torch.Tensor,
    masks: list[torch.Tensor],
    temperature: float,
    clamped: bool = False,
) -> torch.Tensor:
    """Smoothed counts of the columns ranked above each listed column, per competitor set.

    For every anchor row ``a``, slot ``t`` (column ``j = cols[a, t]``) and mask ``m``::

        out[a, t, m] = sum over k with masks[m][a, k] and k != j of
                       sigmoid((sim[a, k] - sim[a, j]) / temperature)

    and 0 where ``valid[a, t]`` is False. ``clamped`` uses PML's PNP sigmoid
    ``1 / (1 + exp(clamp(-x / T, -50, 50)))`` (no gradient where the clamp bites) instead of
    ``torch.sigmoid``. Differentiable in ``sim``; memory stays within the chunking budget.

    Args:
        sim: (N, M) similarities, float (half types are computed in float32).
        cols: (N, k) int64 columns ``j`` per anchor.
        valid: (N, k) bool, which slots are real.
        masks: bool (N, M) competitor sets.
        temperature: the sigmoid's temperature (> 0).
        clamped: PML's clamped sigmoid (PNPLoss) instead of the plain one (SmoothAPLoss).
    """
    # Float32 at least: a half-precision sim (a distance under autocast gives one even from
    # float32 embeddings) made every count 0 (float16 on CPU).
    sim = sim.to(c_f.accumulation_dtype(sim.dtype))
    # (N, n_masks, M): each mask stays a contiguous row block.
    mask_mat = torch.stack([m.to(sim.dtype) for m in masks], dim=1)
    return _SoftRankCounts.apply(sim, cols, valid, mask_mat, float(temperature), clamped)


def _block_sigmoid(s, c, temperature, clamped, with_derivative):
    """Sigmoids (R, k, M) of ``x = (s[:, k] - s[:, c]) / T`` for a block, self-column zeroed.

    With ``with_derivative`` returns the derivative w.r.t. ``s[:, k] - s[:, c]`` instead,
    ``sigmoid(-|x|) (1 - sigmoid(-|x|)) / T``: exact where ``y (1 - y)`` would round ``1 - y``.
    Every step is in place: a block allocates one float tensor.
    """
    z = (s.unsqueeze(1) - s.gather(1, c).unsqueeze(2)).div_(temperature)
    if not with_derivative:
        if clamped:
            z.clamp_(-_EXPONENT_CLAMP, _EXPONENT_CLAMP)
        out = z.sigmoid_()
    else:
        z.abs_()
        if clamped:
            clamped_away = z > _EXPONENT_CLAMP
            z.clamp_(max=_EXPONENT_CLAMP)
        small = z.neg_().sigmoid_()
        out = small.addcmul_(small, small, value=-1)
        if clamped:
            out.masked_fill_(clamped_away, 0)
        out.div_(temperature)
    # Values this small change no sum, but as subnormal floats they slow every later
    # multiply-add several-fold (sigmoids of -90 and below, in float32).
    torch.nn.functional.threshold_(out, torch.finfo(out.dtype).tiny * _SUBNORMAL_MARGIN, 0.0)
    # The column itself is no competitor (its sigmoid is 0.5 and would cancel in the gradient).
    return out.scatter_(2, c.unsqueeze(2), 0)


class _SoftRankCounts(torch.autograd.Function):
    """Blockwise forward; backward recomputes each block's sigmoid derivative.

    With ``D = dsigmoid`` for a block and upstream gradient ``g`` (R, k, n_masks)::

        grad sim[a, k] += sum_m mask_m[a, k] * sum_t g[a, t, m] * D[a, t, k]
        grad sim[a, j_t] -= sum_m g[a, t, m] * sum_k mask_m[a, k] * D[a, t, k]

    two batched matrix products, so no (R, k, M) product with the masks is formed.
    """

    @staticmethod
    def forward(ctx, sim, cols, valid, mask_mat, temperature, clamped):
        n, m = sim.shape
        k, n_masks = cols.shape[1], mask_mat.shape[1]
        out = torch.zeros(n, k, n_masks, dtype=sim.dtype, device=sim.device)
        item = sim.element_size()
        # A block holds one (R, k, M) float tensor and, in backward, a bool one of that shape.
        ctx.bytes_per_row = k * m * (2 * item + 1) + m * n_masks * item
        ctx.budget = (
            chunking.budget_for(sim.device)
            if sim.is_cuda
            else min(chunking.get_memory_budget(), _CPU_BLOCK_BYTES)
        )
        if k:
            with torch.no_grad():
                for rows in chunking.row_chunks(n, ctx.bytes_per_row, ctx.budget):
                    sig = _block_sigmoid(sim[rows], cols[rows], temperature, clamped, False)
                    torch.bmm(sig, mask_mat[rows].transpose(1, 2), out=out[rows])
        out.masked_fill_(~valid.unsqueeze(2), 0)
        ctx.save_for_backward(sim, cols, valid, mask_mat)
        ctx.temperature, ctx.clamped = temperature, clamped
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        sim, cols, valid, mask_mat = ctx.saved_tensors
        grad = torch.zeros_like(sim)
        g = (grad_out * valid.unsqueeze(2)).to(sim.dtype)
        if cols.shape[1]:
            for rows in chunking.row_chunks(sim.shape[0], ctx.bytes_per_row, ctx.budget):
                c, masks = cols[rows], mask_mat[rows]
                deriv = _block_sigmoid(sim[rows], c, ctx.temperature, ctx.clamped, True)
                g_rows = g[rows]
                # (R, n_masks, M): per competitor k, the weight each mask gives it.
                per_k = torch.bmm(g_rows.transpose(1, 2), deriv)
                grad[rows] += (per_k * masks).sum(dim=1)
                per_j = (torch.bmm(deriv, masks.transpose(1, 2)) * g_rows).sum(dim=2)
                grad[rows].scatter_add_(1, c, -per_j)
        return grad, None, None, None, None, None
