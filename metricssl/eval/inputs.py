"""Embeddings and labels at the boundary of the evaluation API: torch tensors or numpy arrays in,
checked float32 / integer tensors on one device out.

PML's ``AccuracyCalculator`` casts everything to float32 (embeddings *and* labels); here the
embeddings become float32 as in PML, while labels keep their own dtype (an int64 class id above
2**24 would not survive a float32 cast). Bad input gets a ``ValueError``/``TypeError`` that names
the argument, instead of a FAISS assertion or a silently wrong number.
"""

from __future__ import annotations

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def to_tensor(x, name: str) -> torch.Tensor:
    """``x`` (tensor or numpy array) as a detached tensor (numpy arrays are shared, not copied)."""
    if torch.is_tensor(x):
        return x.detach()
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must be a numeric array, got dtype object")
        return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def resolve_device(device, x) -> torch.device:
    """The device to compute on: ``device`` when given, else where ``x`` lives (numpy: CPU)."""
    if device is not None:
        return torch.device(device)
    return x.device if torch.is_tensor(x) else torch.device("cpu")


def as_embeddings(x, name: str, device: torch.device) -> torch.Tensor:
    """A 2D, non-empty, finite float32 tensor on ``device``.

    Integer inputs (e.g. raw uint8 pixels) are accepted and cast, as PML does.
    """
    t = to_tensor(x, name)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be 2D with shape (n, embedding_size), got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    t = t.to(device=device, dtype=torch.float32)
    check_finite(t, name)
    return t


def check_finite(x: torch.Tensor, name: str) -> None:
    """``ValueError`` if ``x`` holds NaN or Inf.

    One reduction pass: a NaN/Inf makes its row sum non-finite. Only rows whose sum is not
    finite (which can also be an overflow of large finite values) are checked element-wise.
    """
    row_sums = x.sum(dim=1)
    suspicious = ~torch.isfinite(row_sums)
    if bool(suspicious.any()) and not bool(torch.isfinite(x[suspicious]).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


def as_labels(y, n: int, name: str, embeddings_name: str, device: torch.device) -> torch.Tensor:
    """Labels as a tensor on ``device``: shape (n,) or (n, label_dims), numeric, finite."""
    if y is None:
        raise ValueError(f"{name} is required together with {embeddings_name}")
    t = to_tensor(y, name)
    if t.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape (n,) or (n, label_dims), got shape {tuple(t.shape)}"
        )
    if t.shape[0] != n:
        raise ValueError(f"{name} has length {t.shape[0]} but {embeddings_name} has {n} rows")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return t.to(device)


def label_codes(
    query_labels: torch.Tensor, reference_labels: torch.Tensor, same: bool
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Dense int64 class codes 0..C-1 shared by query and reference labels.

    Codes follow the sorted order of the distinct labels (rows, for multi-dimensional labels),
    which is the order of ``torch.unique`` and so of PML's per-class results. Two labels get the
    same code exactly when they are equal (all entries equal, for multi-dimensional labels).

    Returns:
        (query_codes, reference_codes, number_of_codes)
    """
    if not same:
        if query_labels.shape[1:] != reference_labels.shape[1:]:
            raise ValueError(
                f"query_labels has shape {tuple(query_labels.shape)} but reference_labels has "
                f"{tuple(reference_labels.shape)}: label dimensions differ"
            )
        if query_labels.dtype != reference_labels.dtype:
            common = torch.promote_types(query_labels.dtype, reference_labels.dtype)
            query_labels, reference_labels = query_labels.to(common), reference_labels.to(common)
    both = query_labels if same else torch.cat([query_labels, reference_labels])
    codes, n_codes = _dense_codes(both)
    n_q = query_labels.shape[0]
    q_codes = codes[:n_q]
    r_codes = q_codes if same else codes[n_q:]
    return q_codes, r_codes, n_codes


def _dense_codes(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    if labels.ndim == 1 and not labels.is_floating_point() and labels.dtype != torch.bool:
        lo, hi = (int(v) for v in torch.aminmax(labels))
        span = hi - lo + 1
        if span <= max(4 * labels.shape[0], 1 << 16):
            # Integer ids in a compact range: rank them with a presence table, O(n + span),
            # much faster than the sort behind torch.unique.
            shifted = labels.long() - lo  # widen first: int8/int16 differences would wrap
            present = torch.zeros(span, dtype=torch.long, device=labels.device)
            present[shifted] = 1
            rank = present.cumsum(0) - 1
            return rank[shifted], int(rank[-1]) + 1
    dim = 0 if labels.ndim == 2 else None
    uniq, codes = torch.unique(labels, sorted=True, return_inverse=True, dim=dim)
    return codes, int(uniq.shape[0])
