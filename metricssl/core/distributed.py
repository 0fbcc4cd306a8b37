"""torch.distributed helpers: who am I, how many are we, and all-gathers (with gradient or as
constants) that accept ranks holding different numbers of rows.

PML's ``DistributedLossWrapper`` / ``DistributedMinerWrapper`` and its other gather helpers
live at PML's path, :mod:`metricssl.utils.distributed`, built on these.

Losses that compute statistics over the batch (Barlow Twins' cross-correlation, VICReg's
variance and covariance) or compare every pair of the batch must see the *global* batch under
DistributedDataParallel, or each rank optimises a different, smaller-batch objective.
:func:`gather_with_grad` gives every rank the concatenation of all ranks' rows, and its
backward pass routes the gradient of each row back to the rank that produced it.

Gradient convention (the usual one for DDP, as in SimCLR's and Barlow Twins' reference code):
every rank computes the same loss ``L`` on the gathered tensor, so every rank holds the same
``dL/d(gathered)``. The backward pass sums these over ranks (``all_reduce(SUM)``) and keeps
this rank's slice, i.e. ``world_size * dL/d(local rows)``. DDP then *averages* parameter
gradients over ranks, which cancels the factor: the parameters receive exactly the gradient a
single process would compute on the global batch. More generally, when rank ``r`` computes a
loss ``L_r`` on the gathered rows, the parameters receive the gradient of ``mean_r L_r``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .validation import ArgumentError


def is_distributed() -> bool:
    """True when torch.distributed is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default group (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int | None:
    """This process's ``LOCAL_RANK`` (set by torchrun: its index on this machine), or None."""
    value = os.environ.get("LOCAL_RANK")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ArgumentError(f"LOCAL_RANK must be an integer, got {value!r}") from None


def training_device(device: str | torch.device = "auto") -> torch.device:
    """The device this (training) process runs on, selected and made current.

    ``"auto"`` is CUDA when available, else the CPU. A CUDA device without an index is
    ``cuda:LOCAL_RANK`` under torchrun (one GPU per process on each machine), else the
    current CUDA device; the chosen GPU becomes the current one (``torch.cuda.set_device``),
    so that kernels and NCCL's communicator land on it rather than on ``cuda:0``.

    Raises:
        ValueError: a device torch does not know, CUDA without an available GPU, or a GPU
            index (given or ``LOCAL_RANK``) beyond the visible GPUs.

    Example:
        >>> from metricssl.core.distributed import training_device
        >>> training_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ArgumentError(f"invalid device {device!r}: {err}") from err
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ArgumentError(f"device is {str(device)!r} but torch.cuda.is_available() is False")
    index, source = device.index, f"device {str(device)!r}"
    if index is None:
        index, source = local_rank(), "LOCAL_RANK"
        if index is None:
            index, source = torch.cuda.current_device(), "the current CUDA device"
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise ArgumentError(
            f"{source} asks for cuda:{index}, but {count} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
        )
    device = torch.device("cuda", index)
    torch.cuda.set_device(device)
    return device


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for a training device: ``nccl`` for CUDA, else ``gloo``.

    Example:
        >>> import torch
        >>> from metricssl.core.distributed import backend_for
        >>> backend_for(torch.device("cpu")), backend_for("cuda:1")
        ('gloo', 'nccl')
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_environment(device: torch.device) -> bool:
    """Start the default process group from torchrun's environment (``WORLD_SIZE`` > 1),
    unless one is already initialised; the backend follows ``device``'s type
    (:func:`backend_for`). Call it after :func:`training_device`, so that NCCL binds to
    this process's GPU. Returns True when it started a group (the caller destroys it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return False
    dist.init_process_group(backend=backend_for(device))
    return True


def _row_counts(tensor: torch.Tensor) -> list[int]:
    """Every rank's number of rows of ``tensor``, in rank order."""
    # A fill kernel rather than a host-to-device copy, and one read of all the counts: the
    # only wait for the device is the read itself.
    local_rows = torch.full((1,), tensor.shape[0], device=tensor.device, dtype=torch.int64)
    all_rows = [torch.empty_like(local_rows) for _ in range(world_size())]
    dist.all_gather(all_rows, local_rows)
    return torch.cat(all_rows).tolist()


def _all_gather_rows(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 (rank order); rank i holds sizes[i] rows.

    No gradient flows through this function (``dist.all_gather`` is not differentiable).
    """
    longest = max(sizes)
    # gloo's all_gather takes no bool tensors: carry them as uint8.
    payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    if payload.shape[0] < longest:
        # all_gather needs equal shapes: pad, then cut the padding off each rank's piece.
        pad = payload.new_zeros((longest - payload.shape[0],) + tuple(payload.shape[1:]))
        payload = torch.cat([payload, pad], dim=0)
    else:
        payload = payload.contiguous()
    pieces = [torch.empty_like(payload) for _ in sizes]
    dist.all_gather(pieces, payload)
    return torch.cat([p[:s] for p, s in zip(pieces, sizes)], dim=0).to(tensor.dtype)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        start = sum(sizes[: rank()])
        ctx.rows = (start, start + sizes[rank()])
        return _all_gather_rows(tensor, sizes)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start, stop = ctx.rows
        return grad[start:stop], None


def _check_gatherable(tensor) -> None:
    if not torch.is_tensor(tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim == 0:
        raise ArgumentError("tensor must have at least one dimension (rows are gathered)")


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
        >>> from metricssl.core.distributed import gather_with_grad
        >>> z = torch.randn(4, 8, requires_grad=True)
        >>> gather_with_grad(z).shape  # (4 * world_size, 8)
        torch.Size([4, 8])
    """
    _check_gatherable(tensor)
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor, _row_counts(tensor))


def gather_local_first(tensor: torch.Tensor | None, with_grad: bool = True):
    """This rank's rows followed by every other rank's rows (in rank order): PML's order.

    With ``with_grad``, the other ranks' rows carry gradient back to them
    (:func:`gather_with_grad`'s convention); without, they are constants. The local rows are
    ``tensor`` itself, so an index computed on the local batch points at the same row here.
    ``None`` gives ``None``; one process gives ``tensor``.
    """
    if tensor is None:
        return None
    _check_gatherable(tensor)
    if world_size() == 1:
        return tensor
    sizes = _row_counts(tensor)
    if with_grad:
        gathered = _GatherWithGrad.apply(tensor, sizes)
    else:
        gathered = _all_gather_rows(tensor.detach(), sizes)
    start = sum(sizes[: rank()])
    stop = start + sizes[rank()]
    return torch.cat([tensor, gathered[:start], gathered[stop:]], dim=0)


def all_gather(x: torch.Tensor) -> torch.Tensor | None:
    """The other ranks' rows of ``x`` (rank order, without this rank's), as constants.

    None with one process. Not differentiable (PML's helper of this name); see :func:`gather_with_grad`.
    """
    if world_size() <= 1:
        return None
    sizes = _row_counts(x)
    gathered = _all_gather_rows(x.detach(), sizes)
    start = sum(sizes[: rank()])
    return torch.cat([gathered[:start], gathered[start + sizes[rank()] :]], dim=0)
