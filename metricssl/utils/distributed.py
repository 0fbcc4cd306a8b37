"""PML's import path ``pytorch_metric_learning.utils.distributed``: its gather helpers and its
``DistributedLossWrapper`` / ``DistributedMinerWrapper``.

Rank, world size and the all-gathers live in :mod:`metricssl.core.distributed` (re-exported
here); the helpers below have PML's names and outputs and, unlike PML's, accept ranks holding
different numbers of rows.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from ..core import loss_and_miner_utils as lmu
from ..core.distributed import (
    all_gather,
    backend_for,
    gather_local_first,
    gather_with_grad,
    init_from_environment,
    is_distributed,
    local_rank,
    rank,
    training_device,
    world_size,
)
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError
from ..losses.base_metric_loss_function import BaseMetricLossFunction
from ..losses.cross_batch_memory import CrossBatchMemory
from ..miners.base_miner import BaseMiner

__all__ = [
    "DistributedLossWrapper",
    "DistributedMinerWrapper",
    "all_gather",
    "all_gather_embeddings_and_labels",
    "backend_for",
    "gather",
    "gather_emb_and_ref",
    "gather_enqueue_mask",
    "gather_local_first",
    "gather_with_grad",
    "get_indices_tuple",
    "init_from_environment",
    "is_distributed",
    "local_rank",
    "rank",
    "select_ref_or_regular",
    "training_device",
    "world_size",
]


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
