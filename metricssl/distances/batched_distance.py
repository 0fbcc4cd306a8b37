"""BatchedDistance: a distance computed block by block, handed to a callback."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.validation import check_number
from .base_distance import BaseDistance


class BatchedDistance(torch.nn.Module):
    """Computes ``distance(query[s:e], ref)`` for consecutive blocks and calls ``iter_fn``.

    Use it when the full query x reference matrix would not fit in memory.

    Args:
        distance: any :class:`BaseDistance`.
        iter_fn: called as ``iter_fn(mat, s, e)`` for each block of query rows ``s:e``.
        batch_size: rows of the query per block.

    Example:
        >>> import torch
        >>> from metricssl.distances import BatchedDistance, CosineSimilarity
        >>> best = []
        >>> bd = BatchedDistance(CosineSimilarity(), lambda m, s, e: best.append(m.argmax(1)), 2)
        >>> bd(torch.randn(5, 3), torch.randn(7, 3))
        >>> torch.cat(best).shape
        torch.Size([5])
    """

    def __init__(
        self,
        distance: BaseDistance,
        iter_fn: Callable[[torch.Tensor, int, int], None] | None = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if not isinstance(distance, BaseDistance):
            raise TypeError(f"distance must be a BaseDistance, got {type(distance).__name__}")
        if iter_fn is not None and not callable(iter_fn):
            raise TypeError("iter_fn must be callable as iter_fn(mat, s, e)")
        check_number("batch_size", batch_size, low=1, integer=True)
        self.distance = distance
        self.iter_fn = iter_fn
        self.batch_size = batch_size

    def forward(self, query_emb, ref_emb=None):
        if self.iter_fn is None:
            raise ValueError("iter_fn must be set before calling BatchedDistance")
        ref_emb = query_emb if ref_emb is None else ref_emb
        for s in range(0, query_emb.shape[0], self.batch_size):
            e = min(s + self.batch_size, query_emb.shape[0])
            self.iter_fn(self.distance(query_emb[s:e], ref_emb), s, e)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.distance, name)
