"""torch.distributed helpers: who am I, how many are we, all-gathers that keep gradients, and
PML's ``DistributedLossWrapper`` / ``DistributedMinerWrapper``.

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
import warnings

import torch
import torch.distributed as dist

from . import loss_and_miner_utils as lmu
from .pair_masks import pos_neg_masks
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
        >>> from metricssl.utils.distributed import training_device
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
        >>> from metricssl.utils.distributed import backend_for
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
        >>> from metricssl.utils.distributed import gather_with_grad
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


# ---------------------------------------------------------------------------------------------
# PML's helpers (pytorch_metric_learning.utils.distributed), same names and outputs. Unlike
# PML's, they accept ranks holding different numbers of rows.


def all_gather(x: torch.Tensor) -> torch.Tensor | None:
    """The other ranks' rows of ``x`` (rank order, without this rank's), as constants.

    None with one process. Not differentiable, as in PML; see :func:`gather_with_grad`.
    """
    if world_size() <= 1:
        return None
    sizes = _row_counts(x)
    gathered = _all_gather_rows(x.detach(), sizes)
    start = sum(sizes[: rank()])
    return torch.cat([gathered[:start], gathered[start + sizes[rank()] :]], dim=0)


def all_gather_embeddings_and_labels(emb, labels):
    """``(all_gather(emb), all_gather(labels))``; ``(None, None)`` when not distributed."""
    if not is_distributed():
        return None, None
    ref_labels = all_gather(labels) if labels is not None else None
    return all_gather(emb), ref_labels


def gather(emb, labels):
    """``(all_emb, all_labels, labels)``: local rows first (with their gradient), then the
    other ranks' rows as constants (PML's gather); labels are moved to ``emb``'s device."""
    if labels is not None:
        labels = labels.to(emb.device)
    if world_size() <= 1:
        return emb, labels, labels
    all_emb = torch.cat([emb, all_gather(emb)], dim=0)
    all_labels = torch.cat([labels, all_gather(labels)], dim=0) if labels is not None else None
    return all_emb, all_labels, labels


def gather_emb_and_ref(emb, labels, ref_emb=None, ref_labels=None):
    """:func:`gather` of the embeddings and, when given, of the reference set:
    ``(all_emb, all_labels, all_ref_emb, all_ref_labels, labels)``."""
    all_emb, all_labels, labels = gather(emb, labels)
    all_ref_emb = all_ref_labels = None
    if ref_emb is not None:
        all_ref_emb, all_ref_labels, _ = gather(ref_emb, ref_labels)
    return all_emb, all_labels, all_ref_emb, all_ref_labels, labels


def get_indices_tuple(labels, ref_labels, embeddings=None, ref_emb=None, miner=None):
    """Pairs (or the miner's tuples) of local anchors against a gathered reference set whose
    first ``len(labels)`` rows are the anchors themselves; those self-pairs are removed."""
    n = len(labels)
    if miner is None:
        # Masks instead of PML's index-list search: the same pairs in the same order.
        pos, neg = pos_neg_masks(labels, ref_labels, exclude_self=False)
        pos[:, :n].fill_diagonal_(False)
        return (*torch.where(pos), *torch.where(neg))
    indices_tuple = miner(embeddings, labels, ref_emb, ref_labels)
    if len(indices_tuple) not in (3, 4):
        raise ArgumentError("the miner must return a tuple of 3 or 4 index tensors")
    # PML's remove_self_comparisons for a batch at rows [0, n) of the reference, without its
    # (pairs x n) comparison: a positive p < n is the anchor's own copy when p == a.
    a, p = indices_tuple[0], indices_tuple[1]
    keep = (a != p) | (p >= n)
    if len(indices_tuple) == 3:
        return tuple(x[keep] for x in indices_tuple)
    return a[keep], p[keep], indices_tuple[2], indices_tuple[3]


def gather_enqueue_mask(enqueue_mask, device):
    """The enqueue mask of the gathered batch (local rows first), or None."""
    if enqueue_mask is None:
        return None
    enqueue_mask = enqueue_mask.to(device)
    others = all_gather(enqueue_mask)
    return enqueue_mask if others is None else torch.cat([enqueue_mask, others], dim=0)


def select_ref_or_regular(regular, ref):
    return regular if ref is None else ref


# ---------------------------------------------------------------------------------------------


def _check_efficient(efficient) -> None:
    if not isinstance(efficient, bool):
        raise TypeError(f"efficient must be a bool, got {efficient!r}")


def _mean_over_ranks(loss: torch.Tensor) -> torch.Tensor:
    """``loss``'s value replaced by its mean over ranks; its gradient stays this rank's."""
    total = loss.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return loss + (total / world_size() - loss).detach()


class DistributedLossWrapper(torch.nn.Module):
    """Computes a loss over the batch of every rank under torch.distributed: PML's wrapper.

    Each rank passes its own embeddings; the wrapper gathers every rank's embeddings (and
    labels, reference set, enqueue mask) with :func:`gather_local_first`: this rank's rows
    first, then the other ranks' in rank order (PML's order, so an ``indices_tuple`` mined on
    the local batch, or by :class:`DistributedMinerWrapper`, indexes the same rows). Without
    a process group, or with one process, the loss is called as is (with PML's warning when
    not distributed).

    By default the result is PML's, value and gradients, so a two-process run trains exactly
    as it does with PML:

    - ``efficient=False``: every rank computes the loss over the whole gathered batch and
      returns ``world_size`` times it; the other ranks' rows are constants, so only local
      rows receive gradient, and DDP's averaging makes the model's gradient the
      single-process one. (The logged value is ``world_size`` times the global-batch loss,
      and a loss's own weights, e.g. proxies, get ``world_size`` times their gradient.)
    - ``efficient=True``: rank ``r`` computes the loss of its own rows as anchors against
      the gathered batch (or gathered ``ref_emb``) as reference, all pairs except an
      anchor's pair with its own row (unless ``indices_tuple`` is given), and returns
      ``world_size`` times it. Reference rows of other ranks are constants: an embedding
      gets no gradient from terms where it is another rank's reference.

    ``unscaled=True`` (opt-in, not PML's numbers) returns the loss itself and lets the
    gathered rows carry gradient back to the rank that produced them
    (:func:`gather_with_grad`): with ``efficient=False`` the value is the global-batch loss
    and a loss's weights get the single-process gradient; with ``efficient=True`` the value
    is the mean over ranks of each rank's loss (``mean_r L_r``), the parameters under DDP
    receive exactly its gradient, and the reference terms are kept; with a ``ref_emb`` an
    anchor's pair with the reference row at its own position is kept (it is a different set).

    Both ways, ranks may hold different numbers of rows (PML needs equal batch sizes). Every
    rank must call the wrapper and back-propagate through its result.

    Args:
        loss: a :class:`~metricssl.losses.BaseMetricLossFunction` or a
            :class:`~metricssl.losses.CrossBatchMemory` (only with ``efficient=False``).
        efficient: compute only the local anchors' rows of the loss (see above).
        unscaled: the global-batch loss with gradient through the gather, instead of PML's
            ``world_size`` x the loss with constant gathered rows (see above).

    Example:
        >>> import torch
        >>> from metricssl.losses.contrastive_loss import ContrastiveLoss
        >>> from metricssl.utils.distributed import DistributedLossWrapper
        >>> loss_fn = DistributedLossWrapper(ContrastiveLoss())
        >>> # in each process of a torchrun job, on its share of the batch:
        >>> loss = loss_fn(torch.randn(8, 16), torch.randint(0, 3, (8,)))  # doctest: +SKIP
    """

    def __init__(self, loss: torch.nn.Module, efficient: bool = False, unscaled: bool = False):
        super().__init__()
        from ..losses.base_metric_loss_function import BaseMetricLossFunction
        from ..losses.cross_batch_memory import CrossBatchMemory

        if not isinstance(loss, (BaseMetricLossFunction, CrossBatchMemory)):
            raise TypeError(
                "loss must be a BaseMetricLossFunction or a CrossBatchMemory, got "
                f"{type(loss).__name__}"
            )
        _check_efficient(efficient)
        if not isinstance(unscaled, bool):
            raise TypeError(f"unscaled must be a bool, got {unscaled!r}")
        if isinstance(loss, CrossBatchMemory) and efficient:
            raise ArgumentError("CrossBatchMemory with efficient=True is not supported")
        self.loss = loss
        self.efficient = efficient
        self.unscaled = unscaled

    def _gather(self, tensor, with_grad: bool = True):
        """Local rows first; the other ranks' rows carry gradient only when ``unscaled``."""
        return gather_local_first(tensor, with_grad=with_grad and self.unscaled)

    def _finish(self, loss: torch.Tensor) -> torch.Tensor:
        return _mean_over_ranks(loss) if self.unscaled else loss * world_size()

    def forward(
        self,
        embeddings,
        labels=None,
        indices_tuple=None,
        ref_emb=None,
        ref_labels=None,
        enqueue_mask=None,
    ):
        from ..losses.cross_batch_memory import CrossBatchMemory

        is_memory = isinstance(self.loss, CrossBatchMemory)
        if not is_distributed():
            warnings.warn(
                "DistributedLossWrapper is used without an initialised process group: "
                "returning the wrapped loss as is",
                stacklevel=2,
            )
        if world_size() <= 1:
            if is_memory:
                return self.loss(embeddings, labels, indices_tuple, enqueue_mask)
            return self.loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        if is_memory:
            return self._cross_batch_memory(
                embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
            )
        if enqueue_mask is not None:
            raise ArgumentError("enqueue_mask is only for a wrapped CrossBatchMemory")
        if not torch.is_tensor(embeddings):
            raise TypeError(f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}")
        device = embeddings.device
        labels = None if labels is None else labels.to(device)
        ref_labels = None if ref_labels is None else ref_labels.to(device)
        if not self.efficient:
            loss = self.loss(
                self._gather(embeddings),
                self._gather(labels, with_grad=False),
                indices_tuple,
                self._gather(ref_emb),
                self._gather(ref_labels, with_grad=False),
            )
            return self._finish(loss)
        if ref_emb is None:
            ref = self._gather(embeddings)
            all_ref_labels = self._gather(labels, with_grad=False)
        else:
            ref = self._gather(ref_emb)
            all_ref_labels = self._gather(ref_labels, with_grad=False)
        if indices_tuple is None:
            if labels is None or all_ref_labels is None:
                raise ArgumentError("efficient=True needs labels (or an indices_tuple)")
            if ref_emb is None or not self.unscaled:
                # PML drops an anchor's pair with its own row, also against a ref_emb.
                indices_tuple = get_indices_tuple(labels, all_ref_labels)
            else:
                indices_tuple = lmu.get_all_pairs_indices(labels, all_ref_labels)
        return self._finish(self.loss(embeddings, labels, indices_tuple, ref, all_ref_labels))

    def _cross_batch_memory(
        self, embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask
    ):
        if ref_emb is not None or ref_labels is not None:
            raise ArgumentError("CrossBatchMemory is not compatible with ref_emb and ref_labels")
        device = embeddings.device
        all_emb = self._gather(embeddings)
        all_labels = self._gather(None if labels is None else labels.to(device), with_grad=False)
        all_mask = self._gather(
            None if enqueue_mask is None else enqueue_mask.to(device), with_grad=False
        )
        return self._finish(self.loss(all_emb, all_labels, indices_tuple, all_mask))


class DistributedMinerWrapper(torch.nn.Module):
    """Mines pairs or triplets over the batch of every rank, under torch.distributed.

    A drop-in for PML's ``DistributedMinerWrapper``. The batch is gathered in PML's order
    (this rank's rows first, then the other ranks' in rank order), the same order
    :class:`DistributedLossWrapper` uses, so its output can be passed to that wrapper as
    ``indices_tuple`` with the same ``efficient`` setting:

    - ``efficient=False``: the miner runs on the whole gathered batch; indices point into it.
      Every rank gets the tuples a single process would mine on the global batch (indices
      permuted by the local-first order).
    - ``efficient=True``: the miner runs with this rank's rows as anchors and the gathered
      batch as reference; an anchor's pairs with its own copy are removed (not when
      ``ref_emb`` is given, unlike PML, since then the reference is a different set).

    Without a process group, or with one process, the miner is called as is (PML's wrapper
    fails when no process group is initialised). Miners do not back-propagate, so the
    gathered rows are constants here.

    Args:
        miner: a :class:`~metricssl.miners.BaseMiner`.
        efficient: mine only the local anchors (see above).

    Example:
        >>> import torch
        >>> from metricssl.miners.triplet_margin_miner import TripletMarginMiner
        >>> from metricssl.utils.distributed import DistributedMinerWrapper
        >>> miner = DistributedMinerWrapper(TripletMarginMiner(margin=0.2))
        >>> a, p, n = miner(torch.randn(8, 16), torch.randint(0, 3, (8,)))
    """

    def __init__(self, miner: torch.nn.Module, efficient: bool = False):
        super().__init__()
        from ..miners.base_miner import BaseMiner

        if not isinstance(miner, BaseMiner):
            raise TypeError(f"miner must be a BaseMiner, got {type(miner).__name__}")
        _check_efficient(efficient)
        self.miner = miner
        self.efficient = efficient

    def forward(self, emb, labels, ref_emb=None, ref_labels=None):
        if world_size() <= 1:
            return self.miner(emb, labels, ref_emb, ref_labels)
        if not torch.is_tensor(emb):
            raise TypeError(f"embeddings must be a torch.Tensor, got {type(emb).__name__}")
        device = emb.device
        labels = None if labels is None else labels.to(device)
        ref_labels = None if ref_labels is None else ref_labels.to(device)
        if not self.efficient:
            return self.miner(
                gather_local_first(emb, with_grad=False),
                gather_local_first(labels, with_grad=False),
                gather_local_first(ref_emb, with_grad=False),
                gather_local_first(ref_labels, with_grad=False),
            )
        if labels is None:
            raise ArgumentError(f"{type(self.miner).__name__} needs labels")
        if ref_emb is None:
            all_emb = gather_local_first(emb, with_grad=False)
            all_labels = gather_local_first(labels, with_grad=False)
            return get_indices_tuple(labels, all_labels, emb, all_emb, self.miner)
        all_ref = gather_local_first(ref_emb, with_grad=False)
        return self.miner(emb, labels, all_ref, gather_local_first(ref_labels, with_grad=False))
