"""SNRDistance: signal-to-noise ratio distance (Yuan et al., CVPR 2019)."""

from __future__ import annotations

import torch

from .base_distance import BaseDistance, check_not_inverted


class SNRDistance(BaseDistance):
    """``var(query - ref) / var(query)``: the noise-to-signal ratio of the difference.

    Yuan et al., "Signal-To-Noise Ratio: A Robust Distance Metric for Deep Metric Learning",
    CVPR 2019. Unlike PML, the matrix is computed without a (query x ref x dim) tensor:
    the variance of a difference is the squared distance between the centred vectors.

    Example:
        >>> import torch
        >>> from metricssl.distances import SNRDistance
        >>> SNRDistance()(torch.randn(4, 8)).shape
        torch.Size([4, 4])
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
        dtype = query_emb.dtype
        q, r = query_emb, ref_emb
        if dtype in (torch.float16, torch.bfloat16):
            q, r = q.float(), r.float()
        q_centred = q - q.mean(dim=1, keepdim=True)
        r_centred = r - r.mean(dim=1, keepdim=True)
        dof = q.shape[1] - 1
        diff_var = torch.cdist(q_centred, r_centred).pow(2) / dof
        return (diff_var / torch.var(q, dim=1).unsqueeze(1)).to(dtype)

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.var(query_emb - ref_emb, dim=1) / torch.var(query_emb, dim=1)
