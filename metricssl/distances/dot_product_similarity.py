"""DotProductSimilarity: the inner product (larger means closer)."""

from __future__ import annotations

import torch

from .base_distance import BaseDistance


class DotProductSimilarity(BaseDistance):
    """Inner product between embeddings, L2-normalised first by default.

    Example:
        >>> import torch
        >>> from metricssl.distances import DotProductSimilarity
        >>> DotProductSimilarity(normalize_embeddings=False)(torch.tensor([[1.0, 2.0]]))
        tensor([[5.]])
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        p: float = 2,
        power: float = 1,
        collect_stats: bool | None = None,
    ):
        super().__init__(
            normalize_embeddings=normalize_embeddings,
            p=p,
            power=power,
            is_inverted=True,
            collect_stats=collect_stats,
        )

    def compute_mat(self, query_emb, ref_emb):
        return torch.matmul(query_emb, ref_emb.transpose(-1, -2))

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.sum(query_emb * ref_emb, dim=1)
