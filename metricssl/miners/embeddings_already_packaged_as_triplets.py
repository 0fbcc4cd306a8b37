"""EmbeddingsAlreadyPackagedAsTriplets: the batch is (anchor, positive, negative) rows in order."""

from __future__ import annotations

import torch

from ..core.validation import ArgumentError, check_embeddings
from .base_miner import BaseMiner


class EmbeddingsAlreadyPackagedAsTriplets(BaseMiner):
    """Returns the triplets ``(3t, 3t + 1, 3t + 2)`` for ``t = 0 .. N/3 - 1``.

    For batches built as consecutive (anchor, positive, negative) rows, e.g. by
    :class:`~metricssl.samplers.fixed_set_of_triplets.FixedSetOfTriplets`: passing this
    miner's output as ``indices_tuple`` makes a triplet loss use exactly those triplets.
    Labels are not looked at (they may be None).

    Differences from PML: a batch size that is not a multiple of 3 raises a ValueError
    (PML fails its own length assertion), labels may be None (PML needs them although it
    ignores them), the indices are on the embeddings' device (PML: CPU), and ``ref_emb``
    is rejected (the triplets index ``embeddings``; PML would hand them to a loss that
    reads the positives and negatives from ``ref_emb``).

    Example:
        >>> import torch
        >>> from metricssl.losses import TripletMarginLoss
        >>> from metricssl.miners.embeddings_already_packaged_as_triplets import (
        ...     EmbeddingsAlreadyPackagedAsTriplets,
        ... )
        >>> miner = EmbeddingsAlreadyPackagedAsTriplets()
        >>> embeddings = torch.randn(6, 8)
        >>> miner(embeddings, None)
        (tensor([0, 3]), tensor([1, 4]), tensor([2, 5]))
        >>> loss = TripletMarginLoss()(embeddings, indices_tuple=miner(embeddings, None))

    Args:
        distance: unused; kept for PML's interface.
        collect_stats: record ``num_triplets``.
    """

    def __init__(self, distance=None, collect_stats: bool | None = None):
        super().__init__(distance=distance, collect_stats=collect_stats)

    def forward(self, embeddings, labels=None, ref_emb=None, ref_labels=None):
        return super().forward(embeddings, labels, ref_emb, ref_labels)

    def check_inputs(self, embeddings, labels, ref_emb, ref_labels):
        if ref_emb is not None and ref_emb is not embeddings:
            raise ArgumentError(
                "EmbeddingsAlreadyPackagedAsTriplets takes no ref_emb: its triplets index "
                "rows of embeddings"
            )
        if labels is None:  # not needed: check the embeddings alone
            check_embeddings(embeddings)
            return embeddings, None, embeddings, None
        return super().check_inputs(embeddings, labels, None, None)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        n = embeddings.shape[0]
        if n % 3:
            raise ArgumentError(
                f"EmbeddingsAlreadyPackagedAsTriplets: the batch size ({n}) must be a multiple "
                "of 3 (rows anchor, positive, negative, anchor, ...)"
            )
        starts = torch.arange(0, n, 3, device=embeddings.device)
        return starts, starts + 1, starts + 2
