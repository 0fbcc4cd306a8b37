"""LpDistance: the L_p distance between embeddings (Euclidean by default)."""

from __future__ import annotations

import torch

from .base_distance import BaseDistance, check_not_inverted


class LpDistance(BaseDistance):
    """L_p distance, by default between L2-normalised embeddings.

    Example:
        >>> import torch
        >>> from metricssl.distances import LpDistance
        >>> d = LpDistance(normalize_embeddings=False)
        >>> d(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([[5.]])
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        p: float = 2,
        power: float = 1,
        collect_stats: bool | None = None,
        is_inverted: bool = False,
    ):
        check_not_inverted(self, is_inverted)
        super().__init__(
            normalize_embeddings=normalize_embeddings,
            p=p,
            power=power,
            is_inverted=False,
            collect_stats=collect_stats,
        )

    def compute_mat(self, query_emb, ref_emb):
        if query_emb.dtype in (torch.float16, torch.bfloat16):
            # cdist has no half kernels everywhere: compute in fp32, hand back the input dtype.
            return torch.cdist(query_emb.float(), ref_emb.float(), p=self.p).to(query_emb.dtype)
        return torch.cdist(query_emb, ref_emb, p=self.p)

    def compute_powered_mat(self, query_emb, ref_emb):
        if (
            self.p != 2
            or self.power != 2
            or query_emb.dtype in (torch.float16, torch.bfloat16)
            or type(self).compute_mat is not LpDistance.compute_mat  # a subclass's own matrix
        ):
            return super().compute_powered_mat(query_emb, ref_emb)
        # Squared Euclidean straight from |q|^2 + |r|^2 - 2 q.r: the value cdist takes the
        # square root of (its matmul path), without the root and the square, whose backward
        # through cdist costs several times the matmuls.
        query_sq = query_emb.square().sum(dim=1)
        ref_sq = query_sq if ref_emb is query_emb else ref_emb.square().sum(dim=1)
        mat = (query_emb @ ref_emb.t()).mul_(-2)
        mat.add_(query_sq.unsqueeze(1)).add_(ref_sq)
        return mat.clamp_(min=0)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.nn.functional.pairwise_distance(query_emb, ref_emb, p=self.p)
