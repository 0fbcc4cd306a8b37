"""Principal components of embeddings with FAISS, as PML's testers and samplers take them.

Example:
    >>> import torch
    >>> from metricssl.eval.pca import run_pca
    >>> run_pca(torch.randn(50, 8), 3).shape
    torch.Size([50, 3])
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.common import to_numpy
from ..core.validation import check_number


def run_pca(x: torch.Tensor, output_dimensionality: int) -> torch.Tensor:
    """Project ``x`` (n, d) onto its first ``output_dimensionality`` principal components
    (FAISS's ``PCAMatrix``, as PML); float32, on ``x``'s device."""
    # FAISS is imported on first use, so that importing eval does not need it.
    import faiss

    if not torch.is_tensor(x) or x.ndim != 2:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a 2D torch.Tensor, got {shape}")
    check_number(
        "output_dimensionality", output_dimensionality, low=1, high=x.shape[1], integer=True
    )
    data = np.ascontiguousarray(to_numpy(x), dtype=np.float32)
    pca = faiss.PCAMatrix(data.shape[1], output_dimensionality)
    pca.train(data)
    return torch.from_numpy(np.asarray(pca.apply_py(data))).to(x.device)
