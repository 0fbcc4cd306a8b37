"""CosineSimilarity: the inner product of L2-normalised embeddings."""

from __future__ import annotations

from .dot_product_similarity import DotProductSimilarity


class CosineSimilarity(DotProductSimilarity):
    """Cosine similarity; embeddings are always normalised.

    Example:
        >>> import torch
        >>> from metricssl.distances import CosineSimilarity
        >>> CosineSimilarity()(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]]))
        tensor([[0.]])
    """

    def __init__(self, p: float = 2, power: float = 1, collect_stats: bool | None = None):
        super().__init__(normalize_embeddings=True, p=p, power=power, collect_stats=collect_stats)
