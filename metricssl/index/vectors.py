"""Vectors and ids at the boundary between users (torch or numpy) and FAISS (numpy float32).

FAISS wants C-contiguous float32 numpy rows and int64 ids. These helpers check what the user
passed, then hand FAISS one row chunk at a time so that a large input never needs a full
float32 copy: a contiguous float32 CPU tensor or array is passed through as a view, anything
else (another dtype, another device, a strided view) is converted one chunk at a time.
"""

from __future__ import annotations

import numbers
import warnings
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
        chunk = numpy_view(chunk)
    return chunk.detach().to(device=device, dtype=torch.float32)


def numpy_view(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory, for reading only.

    Read-only arrays (memory-mapped ``.npy`` files) are fine: nothing here writes to inputs,
    so torch's warning about non-writable arrays is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.asarray(array))


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Squared L2 distances reach |q|^2 + |r|^2 <= 2 max|x|^2, which must stay finite in float32:
# the k-NN engine (metricssl.eval.knn) refuses larger norms, and FAISS silently returns inf or
# NaN distances for them, which rank as wrong neighbours.
_MAX_SQUARED_NORM = _FLOAT32_MAX / 2
# The largest id FAISS can store (int64); ids are >= 0 because -1 means "no result".
MAX_ID = int(np.iinfo(np.int64).max)


def check_k(k) -> int:
    """``k`` (neighbours per query) as an int >= 1; ``ValueError`` naming k otherwise.

    Example:
        >>> check_k(10)
        10
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


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


def check_values(chunk: Array, name: str, bounded_norms: bool) -> None:
    """``ValueError`` naming ``name`` if ``chunk`` has a NaN or Inf, or (``bounded_norms``) a
    row whose squared L2 norm overflows float32 distances (see :func:`norms_overflow`)."""
    if not all_finite(chunk):
        raise ValueError(nonfinite_message(name))
    if bounded_norms and norms_overflow(chunk):
        raise ValueError(
            f"{name} are too large: a squared L2 norm exceeds {_MAX_SQUARED_NORM:.3g}, so "
            "squared distances and inner products overflow float32 (scale the vectors down, "
            "or use metric='cosine')"
        )


def check_finite(x: Array, chunk_rows: int, name: str, bounded_norms: bool = False) -> None:
    """:func:`check_values` over ``x``, one row chunk at a time."""
    for rows in row_slices(x.shape[0], chunk_rows):
        check_values(x[rows], name, bounded_norms)


def nonfinite_message(name: str) -> str:
    return f"{name} contains NaN or Inf values (or values beyond the float32 range)"


def norms_overflow(chunk: Array) -> bool:
    """Whether a row's squared L2 norm, computed in float32 as the searches do, exceeds half
    the float32 range (the k-NN engine's limit: ``|q|^2 + |r|^2`` must stay finite).

    ``chunk`` must already be finite in float32 (:func:`all_finite`).
    """
    t = chunk.detach() if torch.is_tensor(chunk) else numpy_view(chunk)
    if t.numel() == 0:
        return False
    norms = t.to(torch.float32).pow(2).sum(dim=1)  # inf when the square overflows
    return bool(norms.max() > _MAX_SQUARED_NORM)


def l2_normalize(chunk: Array) -> Array:
    """Rows scaled to unit L2 norm, as a new float32 array or tensor (zero rows stay zero).

    Norms are computed in float64, so rows whose squared norm overflows (or underflows)
    float32 are still normalised correctly.

    Example:
        >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    tiny = np.finfo(np.float64).tiny
    if torch.is_tensor(chunk):
        wide = chunk.detach().to(torch.float64)
        norms = wide.pow(2).sum(dim=1, keepdim=True).sqrt_().clamp_(min=tiny)
        return (wide / norms).to(torch.float32)
    wide = np.asarray(chunk, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))[:, None]
    return (wide / np.maximum(norms, tiny)).astype(np.float32)


def row_slices(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


def as_id_array(ids, name: str = "ids") -> np.ndarray:
    """``ids`` (tensor, array or sequence of ints) as a 1D int64 numpy array of ids >= 0.

    Negative ids are refused because FAISS uses -1 to mean "no result"; ids above
    ``2**63 - 1`` do not fit FAISS's int64 ids and are refused too.
    """
    if torch.is_tensor(ids):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {ids.dtype}")
        ids = ids.detach().cpu().numpy()
    elif not isinstance(ids, np.ndarray):
        try:
            values = list(ids)
            ids = np.asarray(values)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a sequence of integers: {err}") from None
        if ids.size == 0:
            ids = ids.astype(np.int64)
        elif ids.dtype.kind not in "iu" and all(_is_int(v) for v in values):
            # Python ints beyond int64 make numpy pick float64 or object: say what is wrong.
            _check_id_range([int(v) for v in values], name)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers (int64), got dtype {ids.dtype}")
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1D, got shape {ids.shape}")
    if ids.dtype == np.uint64 and ids.size:
        _check_id_range([int(ids.max())], name)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size and int(ids.min()) < 0:
        raise ValueError(f"{name} must be >= 0 (-1 marks a missing result), got {int(ids.min())}")
    return ids


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_id_range(values: list[int], name: str) -> None:
    for value in values:
        if value < 0:
            raise ValueError(f"{name} must be >= 0 (-1 marks a missing result), got {value}")
        if value > MAX_ID:
            raise ValueError(
                f"{name} must fit in int64 (at most 2**63 - 1 = {MAX_ID}), got {value}"
            )


def like_input(values: np.ndarray, reference: Array) -> Array:
    """``values`` as the same kind of array as ``reference``: numpy, or torch on its device."""
    if torch.is_tensor(reference):
        return torch.from_numpy(values).to(reference.device)
    return values
