"""Vectors and ids at the boundary between users (torch or numpy) and FAISS (numpy float32).

FAISS wants C-contiguous float32 numpy rows and int64 ids. These helpers check what the user
passed, then hand FAISS one row chunk at a time so that a large input never needs a full
float32 copy: a contiguous float32 CPU tensor or array is passed through as a view, anything
else (another dtype, another device, a strided view) is converted one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def check_vectors(x, dim: int, name: str) -> None:
    """``x`` must be a 2D floating-point torch tensor or numpy array with ``dim`` columns."""
    if torch.is_tensor(x):
        floating = x.is_floating_point()
    elif isinstance(x, np.ndarray):
        floating = np.issubdtype(x.dtype, np.floating)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if not floating:
        raise TypeError(f"{name} must hold floating-point vectors, got dtype {x.dtype}")
    if x.ndim != 2:
        hint = f" (use {name}[None] for a single vector)" if x.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2D with shape (n, {dim}), got shape {tuple(x.shape)}{hint}"
        )
    if x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the index has dim={dim}")


def to_numpy_float32(chunk: Array) -> np.ndarray:
    """A C-contiguous float32 numpy array of ``chunk``; a view when no conversion is needed."""
    if torch.is_tensor(chunk):
        chunk = chunk.detach()
        if chunk.device.type != "cpu" or chunk.dtype != torch.float32:
            # One copy: the dtype cast happens on the chunk's device, then one transfer.
            chunk = chunk.to(dtype=torch.float32).cpu()
        chunk = chunk.numpy()
    return np.ascontiguousarray(chunk, dtype=np.float32)


def to_torch_float32(chunk: Array, device: torch.device) -> torch.Tensor:
    """``chunk`` as a float32 tensor on ``device`` (no copy when it already is one)."""
    if not torch.is_tensor(chunk):
        chunk = torch.from_numpy(np.asarray(chunk))
    return chunk.detach().to(device=device, dtype=torch.float32)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def all_finite(chunk: Array) -> bool:
    """No NaN/Inf in ``chunk``, and (for float64) nothing that overflows float32."""
    if torch.is_tensor(chunk):
        if chunk.dtype == torch.float64:
            # NaN fails the comparison, so this also catches NaN.
            return bool((chunk.abs() <= _FLOAT32_MAX).all())
        return bool(torch.isfinite(chunk).all())
    if chunk.dtype.itemsize > 4:
        return bool((np.abs(chunk) <= _FLOAT32_MAX).all())
    return bool(np.isfinite(chunk).all())


def check_finite(x: Array, chunk_rows: int, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has a NaN or Inf, scanning it one row chunk at a time."""
    for rows in row_slices(x.shape[0], chunk_rows):
        if not all_finite(x[rows]):
            raise ValueError(nonfinite_message(name))


def nonfinite_message(name: str) -> str:
    return f"{name} contains NaN or Inf values (or values beyond the float32 range)"


def l2_normalize(chunk: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in a new array (zero rows stay zero)."""
    norms = np.linalg.norm(chunk, axis=1, keepdims=True)
    return chunk / np.maximum(norms, np.finfo(np.float32).tiny)


def row_slices(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def as_id_array(ids, name: str = "ids") -> np.ndarray:
    """``ids`` (tensor, array or sequence of ints) as a 1D int64 numpy array of ids >= 0.

    Negative ids are refused because FAISS uses -1 to mean "no result".
    """
    if torch.is_tensor(ids):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {ids.dtype}")
        ids = ids.detach().cpu().numpy()
    elif not isinstance(ids, np.ndarray):
        try:
            ids = np.asarray(ids)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of integers: {err}") from None
        if ids.size == 0:
            ids = ids.astype(np.int64)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers (int64), got dtype {ids.dtype}")
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1D, got shape {ids.shape}")
    if ids.dtype == np.uint64 and ids.size and int(ids.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size and int(ids.min()) < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing result), got {int(ids.min())}")
    return ids


def like_input(values: np.ndarray, reference: Array) -> Array:
    """``values`` as the same kind of array as ``reference``: numpy, or torch on its device."""
    if torch.is_tensor(reference):
        return torch.from_numpy(values).to(reference.device)
    return values
