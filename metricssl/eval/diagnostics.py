"""Representation diagnostics: alignment, uniformity, effective rank, and a collapse signal.

- ``alignment`` and ``uniformity``: Wang and Isola, "Understanding Contrastive Representation
  Learning through Alignment and Uniformity on the Hypersphere", ICML 2020. Both are defined on
  L2-normalised embeddings, which these functions normalise first. Lower is better for both.
- ``effective_rank``: RankMe (Garrido, Balestriero, Najman and LeCun, "RankMe: Assessing the
  Downstream Performance of Pretrained Self-Supervised Representations by Their Rank",
  ICML 2023): exp of the entropy of the singular values normalised to sum to 1. It ranges from
  1 (all embeddings on one line: collapse) to min(n, d) (all directions used equally).
- ``embedding_std``: the per-dimension standard deviation of L2-normalised embeddings, the
  collapse monitor of Chen and He ("Exploring Simple Siamese Representation Learning",
  CVPR 2021): about 0 when every embedding is the same, about 1/sqrt(d) when they spread
  evenly over the sphere.

Inputs are torch tensors (any device) or numpy arrays; results are Python floats (or a tensor,
for ``embedding_std(..., reduction="none")``). Work is done in row chunks sized by the package
memory budget, so large inputs need no large temporaries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.chunking import row_chunks
from ..core.validation import check_choice, check_number
from .inputs import as_embeddings, resolve_device

_RANKME_EPS = 1e-7  # the epsilon of the RankMe paper


def _embeddings(x, name: str) -> torch.Tensor:
    return as_embeddings(x, name, resolve_device(None, x))


def alignment(x, y, alpha: float = 2) -> float:
    """Mean of ``|f(x_i) - f(y_i)|^alpha`` over positive pairs (rows of x and y), with f the L2
    normalisation. 0 when every pair maps to the same point, at most 2**alpha.

    Example:
        >>> import torch
        >>> from metricssl.eval.diagnostics import alignment
        >>> x = torch.randn(100, 8)
        >>> alignment(x, x)
        0.0
    """
    check_number("alpha", alpha, low=0, low_inclusive=False)
    a, b = _embeddings(x, "x"), _embeddings(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x has shape {tuple(a.shape)} but y has {tuple(b.shape)}")
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for rows in row_chunks(a.shape[0], 3 * a.shape[1] * 4):
        diff = F.normalize(a[rows], dim=1) - F.normalize(b[rows], dim=1)
        total += diff.norm(dim=1).to(torch.float64).pow(alpha).sum()
    return float(total) / a.shape[0]


def uniformity(x, t: float = 2) -> float:
    """``log`` of the mean of ``exp(-t |f(x_i) - f(x_j)|^2)`` over all pairs i < j, with f the
    L2 normalisation. Between -4t (points spread evenly, in the limit) and 0 (all identical).

    Exact over all n(n-1)/2 pairs, computed block by block (O(n^2 d) time, bounded memory);
    subsample large sets for a quicker estimate.

    Example:
        >>> import torch
        >>> from metricssl.eval.diagnostics import uniformity
        >>> uniformity(torch.ones(10, 4))
        0.0
    """
    check_number("t", t, low=0, low_inclusive=False)
    z = F.normalize(_embeddings(x, "x"), dim=1)
    n = z.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    total = torch.zeros((), dtype=torch.float64, device=z.device)
    positions = torch.arange(n, device=z.device)
    for rows in row_chunks(n, 3 * 4 * n):
        # Only pairs i < j: the columns from this block's first row on, above its diagonal.
        # |a - b|^2 = 2 - 2 a.b for unit vectors (clamped against rounding).
        sq = (2 - 2 * z[rows] @ z[rows.start :].T).clamp_(min=0)
        upper = positions[None, : n - rows.start] > positions[: rows.stop - rows.start, None]
        total += torch.exp(-t * sq).masked_fill_(~upper, 0).sum(dtype=torch.float64)
    return math.log(float(total) / (n * (n - 1) / 2))


def singular_values(x) -> torch.Tensor:
    """Singular values of the (n, d) matrix ``x`` (float64, descending).

    For n >= d they come from the d x d Gram matrix accumulated over row chunks (float64), so
    no copy of ``x`` is needed; otherwise from ``x`` directly.
    """
    z = _embeddings(x, "embeddings")
    n, d = z.shape
    if n < d:
        return torch.linalg.svdvals(z.to(torch.float64))
    gram = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    for rows in row_chunks(n, 8 * d):
        block = z[rows].to(torch.float64)
        gram += block.T @ block
    eigenvalues = torch.linalg.eigvalsh(gram).flip(0)
    return eigenvalues.clamp(min=0).sqrt()


def effective_rank(embeddings) -> float:
    """RankMe: ``exp(-sum_k p_k log p_k)`` with ``p_k = s_k / sum(s) + 1e-7`` over the singular
    values ``s`` of the (n, d) embedding matrix (not centred, as in the paper). 0.0 for an
    all-zero matrix.

    Example:
        >>> import torch
        >>> from metricssl.eval.diagnostics import effective_rank
        >>> round(effective_rank(torch.ones(100, 16)), 3)  # collapsed: one direction
        1.0
    """
    s = singular_values(embeddings)
    total = s.sum()
    if float(total) == 0.0:
        return 0.0
    p = s / total + _RANKME_EPS
    return float(torch.exp(-(p * torch.log(p)).sum()))


def embedding_std(embeddings, reduction: str = "mean"):
    """Standard deviation over samples of each dimension of the L2-normalised embeddings.

    Args:
        embeddings: (n, d), n >= 2.
        reduction: ``"mean"`` (a float: the average over dimensions) or ``"none"`` (a float64
            tensor of the d per-dimension values, on the input's device).

    Example:
        >>> import torch
        >>> from metricssl.eval.diagnostics import embedding_std
        >>> embedding_std(torch.ones(50, 8))  # collapsed
        0.0
    """
    check_choice("reduction", reduction, ("mean", "none"))
    z = _embeddings(embeddings, "embeddings")
    n, d = z.shape
    if n < 2:
        raise ValueError("embedding_std needs at least 2 embeddings")
    # Shifting by one embedding first keeps the float64 sums free of cancellation.
    shift = F.normalize(z[:1], dim=1).to(torch.float64)
    sums = torch.zeros(d, dtype=torch.float64, device=z.device)
    squares = torch.zeros(d, dtype=torch.float64, device=z.device)
    for rows in row_chunks(n, 8 * d):
        centred = F.normalize(z[rows], dim=1).to(torch.float64) - shift
        sums += centred.sum(dim=0)
        squares += centred.pow(2).sum(dim=0)
    variance = ((squares - sums.pow(2) / n) / (n - 1)).clamp(min=0)
    std = variance.sqrt()
    return float(std.mean()) if reduction == "mean" else std
