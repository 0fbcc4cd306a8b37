"""Memory budget for work that grows faster than N^2, and the row chunks that respect it.

Losses and miners that would otherwise build an N x N x N tensor (all triplets) walk over
blocks of anchors instead; the block is as large as the budget allows, so small batches run
in one block and batch 8192 still fits on a laptop.
"""

from __future__ import annotations

from collections.abc import Iterator

_MEMORY_BUDGET_BYTES = 256 * 2**20


def get_memory_budget() -> int:
    """Bytes one chunk of intermediate work may take (default 256 MiB)."""
    return _MEMORY_BUDGET_BYTES


def set_memory_budget(num_bytes: int) -> None:
    """Change the per-chunk memory budget used by every loss and miner."""
    if not isinstance(num_bytes, int) or isinstance(num_bytes, bool) or num_bytes <= 0:
        raise ValueError(f"num_bytes must be a positive int, got {num_bytes!r}")
    global _MEMORY_BUDGET_BYTES
    _MEMORY_BUDGET_BYTES = num_bytes


def rows_per_chunk(bytes_per_row: int, budget: int | None = None) -> int:
    """How many rows of ``bytes_per_row`` fit in the budget (at least one)."""
    budget = get_memory_budget() if budget is None else budget
    return max(1, budget // max(1, int(bytes_per_row)))


def row_chunks(n_rows: int, bytes_per_row: int, budget: int | None = None) -> Iterator[slice]:
    """Consecutive slices over ``n_rows`` rows, each within the memory budget."""
    step = rows_per_chunk(bytes_per_row, budget)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))
