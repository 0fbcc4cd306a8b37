"""torch.distributed helpers: who am I, how many are we, and an all-gather that keeps gradients.

Losses that compute statistics over the batch (Barlow Twins' cross-correlation, VICReg's
variance and covariance) must see the *global* batch under DistributedDataParallel, or each
rank optimises a different, smaller-batch objective. :func:`gather_with_grad` gives every rank
the concatenation of all ranks' rows, and its backward pass routes the gradient of each row
back to the rank that produced it.

Gradient convention (the usual one for DDP, as in SimCLR's and Barlow Twins' reference code):
every rank computes the same loss ``L`` on the gathered tensor, so every rank holds the same
``dL/d(gathered)``. The backward pass sums these over ranks (``all_reduce(SUM)``) and keeps
this rank's slice, i.e. ``world_size * dL/d(local rows)``. DDP then *averages* parameter
gradients over ranks, which cancels the factor: the parameters receive exactly the gradient a
single process would compute on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def _all_gather_rows(tensor: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate every rank's ``tensor`` along dim 0; ranks may hold different row counts.

    Returns the concatenation and the list of row counts, in rank order.
    """
    n = world_size()
    local_rows = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.int64)
    all_rows = [torch.empty_like(local_rows) for _ in range(n)]
    dist.all_gather(all_rows, local_rows)
    sizes = [int(r.item()) for r in all_rows]
    longest = max(sizes)
    if tensor.shape[0] < longest:
        # all_gather needs equal shapes: pad, then cut the padding off each rank's piece.
        pad = tensor.new_zeros((longest - tensor.shape[0],) + tuple(tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    else:
        padded = tensor.contiguous()
    pieces = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(pieces, padded)
    return torch.cat([p[:s] for p, s in zip(pieces, sizes)], dim=0), sizes


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        gathered, sizes = _all_gather_rows(tensor)
        start = sum(sizes[: rank()])
        ctx.rows = (start, start + sizes[rank()])
        return gathered

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, stop = ctx.rows
        return grad[start:stop]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``tensor`` concatenated along dim 0 (in rank order), with gradient.

    Without an initialised process group (or with one process) the tensor is returned as is.
    Ranks may hold different numbers of rows; the other dimensions must agree. Every rank must
    call it (it is a collective), and every rank must back-propagate through it.

    The backward pass returns ``sum over ranks of dL/d(gathered)`` restricted to this rank's
    rows; see the module docstring for why that makes DDP's averaged gradients equal to the
    single-process gradient on the global batch.

    Example:
        >>> import torch
        >>> from metricssl.utils.distributed import gather_with_grad
        >>> z = torch.randn(4, 8, requires_grad=True)
        >>> gather_with_grad(z).shape  # (4 * world_size, 8)
        torch.Size([4, 8])
    """
    if not torch.is_tensor(tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim == 0:
        raise ValueError("tensor must have at least one dimension (rows are gathered)")
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)
