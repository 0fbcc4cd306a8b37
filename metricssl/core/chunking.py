"""Memory budget for work that grows faster than N^2, and the row chunks that respect it.

Losses and miners that would otherwise build an N x N x N tensor (all triplets) walk over
blocks of anchors instead; the block is as large as the budget allows, so small batches run
in one block and batch 8192 still fits on a laptop.

The budget depends on where the work runs (:func:`budget_for`): 256 MiB on the CPU; on a
CUDA device a quarter of its free memory, at most 4 GiB, so a large GPU walks its blocks in
a few big kernels instead of a thousand small ones. :func:`set_memory_budget` fixes one
budget for every device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

_DEFAULT_BUDGET_BYTES = 256 * 2**20
# Set by set_memory_budget; None: the default of each device (budget_for).
_MEMORY_BUDGET_BYTES: int | None = None
# A chunk's intermediates live next to the model, the optimizer state and the caching
# allocator's reserve: a quarter of what is free leaves room for all of them. Beyond a few
# GiB a block is already thousands of rows wide, so larger blocks no longer run faster.
_CUDA_FREE_FRACTION = 0.25
_CUDA_MAX_BUDGET_BYTES = 4 * 2**30


def get_memory_budget() -> int:
    """Bytes one chunk of intermediate work may take on the CPU (default 256 MiB), or the
    budget :func:`set_memory_budget` fixed for every device."""
    return _DEFAULT_BUDGET_BYTES if _MEMORY_BUDGET_BYTES is None else _MEMORY_BUDGET_BYTES


def set_memory_budget(num_bytes: int | None) -> None:
    """Fix the per-chunk memory budget of every loss and miner, on every device; ``None``
    goes back to the per-device default of :func:`budget_for`."""
    if num_bytes is not None and (
        not isinstance(num_bytes, int) or isinstance(num_bytes, bool) or num_bytes <= 0
    ):
        raise ValueError(f"num_bytes must be a positive int or None, got {num_bytes!r}")
    global _MEMORY_BUDGET_BYTES
    _MEMORY_BUDGET_BYTES = num_bytes


def budget_for(device: torch.device | str | None = None) -> int:
    """Bytes one chunk may take for work on ``device`` (None: the CPU).

    The budget :func:`set_memory_budget` fixed, if any; else 256 MiB off CUDA, and on a CUDA
    device a quarter of its free memory (``torch.cuda.mem_get_info``, a driver query, not a
    synchronisation), at most 4 GiB.

    Example:
        >>> from metricssl.core.chunking import budget_for
        >>> budget_for("cpu") // 2**20
        256
    """
    if _MEMORY_BUDGET_BYTES is not None:
        return _MEMORY_BUDGET_BYTES
    if device is None or torch.device(device).type != "cuda":
        return _DEFAULT_BUDGET_BYTES
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(_CUDA_MAX_BUDGET_BYTES, int(free * _CUDA_FREE_FRACTION)))


def rows_per_chunk(
    bytes_per_row: int, budget: int | None = None, device: torch.device | str | None = None
) -> int:
    """How many rows of ``bytes_per_row`` fit in the budget (at least one); without an
    explicit ``budget``, the budget of ``device`` (:func:`budget_for`)."""
    budget = budget_for(device) if budget is None else budget
    return max(1, budget // max(1, int(bytes_per_row)))


def row_chunks(
    n_rows: int,
    bytes_per_row: int,
    budget: int | None = None,
    device: torch.device | str | None = None,
) -> Iterator[slice]:
    """Consecutive slices over ``n_rows`` rows, each within the memory budget (of
    ``device`` unless ``budget`` is given)."""
    step = rows_per_chunk(bytes_per_row, budget, device)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
