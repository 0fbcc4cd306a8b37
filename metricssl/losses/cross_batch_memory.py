"""CrossBatchMemory: compare each batch with a queue of embeddings from earlier batches."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.records import ModuleWithRecords
from ..core.validation import (
    ArgumentError,
    check_embeddings,
    check_indices_tuple,
    check_labels,
    check_number,
)
from .base_loss_wrapper import BaseLossWrapper

SUPPORTED_LOSSES = (
    "AngularLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "GeneralizedLiftedStructureLoss",
    "IntraPairVarianceLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NCALoss",
    "NTXentLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
)


class CrossBatchMemory(BaseLossWrapper, ModuleWithRecords):
    """A loss computed between the current batch and a memory of past embeddings.

    Wang, Zhang, Huang and Scott, "Cross-Batch Memory for Embedding Learning", CVPR 2020.
    The memory is a first-in-first-out queue of ``memory_size`` (detached) embeddings and
    their labels. Each call enqueues the batch, then evaluates the wrapped loss with the batch
    as anchors and the whole filled part of the queue as the reference set (``ref_emb``),
    exactly as PML's ``CrossBatchMemory``:

    - pairs are all (anchor, memory) pairs, or those of ``miner(embeddings, labels, memory,
      memory_labels)`` when a miner is given; a query is never its own positive (its own copy
      in the queue is removed from the positive pairs);
    - an ``indices_tuple`` passed to :meth:`forward` is appended to those pairs as is (its
      anchors index the batch, its positives and negatives index the memory), converted to
      the same format (pairs or triplets) first;
    - with ``enqueue_mask`` (a bool per row), only the masked rows are enqueued and only the
      others are anchors; nothing is removed then, since no anchor is in the queue.

    The default pairs are read from a label mask (PML lists them and then searches every
    positive pair against the whole batch to remove self-comparisons).

    Deviations from PML, in cases where PML's result is unintended or PML fails: an
    ``enqueue_mask`` that enqueues nothing does not mark the queue as full (PML then compares
    with the zeros of the never-written slots); with a batch of one embedding, its
    self-comparison is removed (PML keeps it); under ``torch.autocast("cuda")`` the memory
    takes the embeddings' dtype, as it does outside autocast (PML keeps it float32 there and
    fails writing half-precision rows into it). When no anchors remain or the memory is still
    empty, the result is a zero loss that back-propagates.

    Args:
        loss: the wrapped loss, one of :meth:`supported_losses` (matched by class name).
        embedding_size: the width of the embeddings (> 0).
        memory_size: how many embeddings the queue holds (> 0).
        miner: an optional miner, called with the batch as queries and the memory as
            reference.

    Example:
        >>> import torch
        >>> from metricssl.losses.cross_batch_memory import CrossBatchMemory
        >>> from metricssl.losses.ntxent_loss import NTXentLoss
        >>> loss_fn = CrossBatchMemory(NTXentLoss(), embedding_size=16, memory_size=64)
        >>> for _ in range(3):
        ...     loss = loss_fn(torch.randn(8, 16), torch.randint(0, 4, (8,)))
    """

    def __init__(
        self, loss: torch.nn.Module, embedding_size: int, memory_size: int = 1024, miner=None
    ):
        super().__init__(loss)
        check_number("embedding_size", embedding_size, low=1, integer=True)
        check_number("memory_size", memory_size, low=1, integer=True)
        if miner is not None and not callable(miner):
            raise TypeError(f"miner must be a miner module or None, got {type(miner).__name__}")
        self.loss = loss
        self.miner = miner
        self.embedding_size = embedding_size
        self.memory_size = memory_size
        self.reset_queue()
        self.add_to_recordable_attributes(
            list_of_names=["embedding_size", "memory_size", "queue_idx"], is_stat=False
        )

    @staticmethod
    def supported_losses() -> list[str]:
        return list(SUPPORTED_LOSSES)

    def reset_queue(self) -> None:
        """Empty the memory (zeros on the CPU, as when the module was built)."""
        self.register_buffer("embedding_memory", torch.zeros(self.memory_size, self.embedding_size))
        self.register_buffer("label_memory", torch.zeros(self.memory_size, dtype=torch.long))
        self.has_been_filled = False
        self.queue_idx = 0

    def forward(self, embeddings, labels, indices_tuple=None, enqueue_mask=None):
        if indices_tuple is not None and enqueue_mask is not None:
            raise ArgumentError("indices_tuple and enqueue_mask are mutually exclusive")
        self._check_inputs(embeddings, labels, indices_tuple, enqueue_mask)
        self.reset_stats()
        device = embeddings.device
        labels = c_f.to_device(labels, device=device)
        # The memory follows the embeddings' device and dtype, as in PML, also under CUDA
        # autocast (where PML's cast is skipped and writing half-precision rows into its
        # float32 memory fails).
        self.embedding_memory = self.embedding_memory.to(device=device, dtype=embeddings.dtype)
        self.label_memory = self.label_memory.to(device=device, dtype=labels.dtype)

        if enqueue_mask is not None:
            enqueue_mask = c_f.to_device(enqueue_mask, device=device)
            emb_for_queue, labels_for_queue = embeddings[enqueue_mask], labels[enqueue_mask]
            queries, query_labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
            do_remove_self_comparisons = False
        else:
            emb_for_queue, labels_for_queue = embeddings, labels
            queries, query_labels = embeddings, labels
            do_remove_self_comparisons = True
        if len(emb_for_queue) > self.memory_size:
            raise ArgumentError(
                f"{len(emb_for_queue)} embeddings to enqueue but memory_size is {self.memory_size}"
            )
        self.add_to_memory(emb_for_queue, labels_for_queue, len(emb_for_queue))

        size = self.memory_size if self.has_been_filled else self.queue_idx
        E_mem, L_mem = self.embedding_memory[:size], self.label_memory[:size]
        if len(queries) == 0 or size == 0:
            return torch.sum(embeddings * 0)
        indices_tuple = self.create_indices_tuple(
            queries, query_labels, E_mem, L_mem, indices_tuple, do_remove_self_comparisons
        )
        return self.loss(queries, query_labels, indices_tuple, E_mem, L_mem)

    def _check_inputs(self, embeddings, labels, indices_tuple, enqueue_mask) -> None:
        check_embeddings(embeddings)
        if embeddings.shape[1] != self.embedding_size:
            raise ArgumentError(
                f"embeddings have size {embeddings.shape[1]} but embedding_size is "
                f"{self.embedding_size}"
            )
        if labels is None:
            raise ArgumentError("CrossBatchMemory needs labels")
        n = embeddings.shape[0]
        check_labels(labels, n)
        if enqueue_mask is not None:
            if not torch.is_tensor(enqueue_mask) or enqueue_mask.dtype != torch.bool:
                raise TypeError("enqueue_mask must be a bool tensor")
            if enqueue_mask.shape != (n,):
                raise ArgumentError(
                    f"enqueue_mask must have shape ({n},), got {tuple(enqueue_mask.shape)}"
                )
        elif n > self.memory_size:
            raise ArgumentError(
                f"batch of {n} embeddings is larger than memory_size {self.memory_size}"
            )
        if indices_tuple is not None:
            # Checked before anything is enqueued, against the memory as it will then be.
            filled = self.has_been_filled or self.queue_idx + n >= self.memory_size
            check_indices_tuple(
                indices_tuple, n, self.memory_size if filled else self.queue_idx + n
            )

    def add_to_memory(self, embeddings, labels, batch_size: int) -> None:
        """Write a batch at the queue's head (wrapping around) and advance the head."""
        self.curr_batch_idx = (
            torch.arange(self.queue_idx, self.queue_idx + batch_size, device=labels.device)
            % self.memory_size
        )
        # Written in the memory's dtype: a direct call may pass another one.
        self.embedding_memory[self.curr_batch_idx] = embeddings.detach().to(
            self.embedding_memory.dtype
        )
        self.label_memory[self.curr_batch_idx] = labels.detach().to(self.label_memory.dtype)
        prev_queue_idx = self.queue_idx
        self.queue_idx = (self.queue_idx + batch_size) % self.memory_size
        if batch_size > 0 and not self.has_been_filled and self.queue_idx <= prev_queue_idx:
            self.has_been_filled = True

    def create_indices_tuple(
        self, embeddings, labels, E_mem, L_mem, input_indices_tuple, do_remove_self_comparisons
    ):
        """The pairs (or a miner's tuple) between the batch and the memory, plus the input's."""
        if self.miner is not None:
            indices_tuple = self.miner(embeddings, labels, E_mem, L_mem)
            if do_remove_self_comparisons:
                indices_tuple = self._remove_self_comparisons(indices_tuple)
        else:
            pos, neg = pos_neg_masks(labels, L_mem, exclude_self=False)
            if do_remove_self_comparisons:
                pos[torch.arange(len(labels), device=pos.device), self.curr_batch_idx] = False
            indices_tuple = (*torch.where(pos), *torch.where(neg))

        if input_indices_tuple is not None:
            if len(input_indices_tuple) == 3 and len(indices_tuple) == 4:
                input_indices_tuple = lmu.convert_to_pairs(input_indices_tuple, labels)
            elif len(input_indices_tuple) == 4 and len(indices_tuple) == 3:
                input_indices_tuple = lmu.convert_to_triplets(input_indices_tuple, labels)
            indices_tuple = c_f.concatenate_indices_tuples(indices_tuple, input_indices_tuple)
        return indices_tuple

    def _remove_self_comparisons(self, indices_tuple):
        """Drop the positive pairs (or triplets) whose positive is the anchor's own queue slot."""
        anchors, positives = indices_tuple[0], indices_tuple[1]
        keep = positives != self.curr_batch_idx[anchors.long()]
        if len(indices_tuple) == 3:
            return tuple(x[keep] for x in indices_tuple)
        return anchors[keep], positives[keep], indices_tuple[2], indices_tuple[3]
