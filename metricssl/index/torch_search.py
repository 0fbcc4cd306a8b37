"""Exact k-nearest-neighbour search in plain torch: blocked matmul + ``torch.topk``.

This is how an exact index searches CUDA tensors when FAISS has no GPU build: the queries
never leave the GPU. It returns what ``faiss.IndexFlat`` returns, so every path of
:class:`~metricssl.index.embedding_index.EmbeddingIndex` gives the same answer:

- ``"l2"``: *squared* Euclidean distances, smallest first (FAISS's convention);
- ``"ip"``: inner products, largest first (the caller normalises for cosine).

The work is done in (query block) x (database block) tiles sized by the package memory
budget (:mod:`metricssl.utils.chunking`); each tile's top-k is merged into a running top-k,
so memory stays bounded for any number of queries and database vectors.
"""

from __future__ import annotations

import torch

from ..utils.chunking import get_memory_budget, rows_per_chunk

# Database rows per tile: large enough for efficient matmuls, small enough that one query
# row's tile stays small.
_DB_BLOCK_ROWS = 65536


def squared_norms(database: torch.Tensor) -> torch.Tensor:
    """Row-wise squared L2 norms, precomputed once per database for ``metric="l2"``."""
    return database.pow(2).sum(dim=1)


def exact_search(
    queries: torch.Tensor,
    database: torch.Tensor,
    k: int,
    metric: str,
    database_sq_norms: torch.Tensor | None = None,
    budget_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest database rows of each query row.

    Args:
        queries: (nq, d) float32, on the device where the search runs.
        database: (n, d) float32 on the same device.
        k: neighbours per query (>= 1). When ``k > n`` the extra columns are padding:
            position -1 and distance +inf (``"l2"``) or -inf (``"ip"``).
        metric: ``"l2"`` (squared distances, ascending) or ``"ip"`` (descending).
        database_sq_norms: ``squared_norms(database)``, to avoid recomputing it per call.
        budget_bytes: memory for one distance tile (default: the package memory budget).

    Returns:
        (distances float32 (nq, k), positions int64 (nq, k)) — positions are row numbers
        into ``database``.
    """
    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    nq, n = queries.shape[0], database.shape[0]
    device = queries.device
    largest = metric == "ip"
    pad_value = float("-inf") if largest else float("inf")
    distances = torch.full((nq, k), pad_value, dtype=torch.float32, device=device)
    positions = torch.full((nq, k), -1, dtype=torch.int64, device=device)
    if nq == 0 or n == 0:
        return distances, positions
    k_found = min(k, n)
    if metric == "l2" and database_sq_norms is None:
        database_sq_norms = squared_norms(database)

    budget = get_memory_budget() if budget_bytes is None else budget_bytes
    db_rows = min(n, _DB_BLOCK_ROWS, rows_per_chunk(4 * 2, budget))
    # A tile is (query rows) x (db_rows) float32, plus top-k scratch of the same order.
    q_rows = rows_per_chunk(4 * 2 * (db_rows + 2 * k_found), budget)
    for q_start in range(0, nq, q_rows):
        q = queries[q_start : q_start + q_rows]
        best_d, best_i = _search_block(q, database, database_sq_norms, k_found, db_rows, metric)
        distances[q_start : q_start + q.shape[0], :k_found] = best_d
        positions[q_start : q_start + q.shape[0], :k_found] = best_i
    return distances, positions


def _search_block(q, database, database_sq_norms, k, db_rows, metric):
    largest = metric == "ip"
    q_sq_norms = squared_norms(q)[:, None] if metric == "l2" else None
    best_d = best_i = None
    for start in range(0, database.shape[0], db_rows):
        block = database[start : start + db_rows]
        if metric == "l2":
            # ||q||^2 + ||x||^2 - 2 q.x, clamped at 0 against rounding (as FAISS does).
            d = torch.addmm(database_sq_norms[start : start + db_rows][None], q, block.T, alpha=-2)
            d = d.add_(q_sq_norms).clamp_(min=0)
        else:
            d = q @ block.T
        block_d, block_i = d.topk(min(k, block.shape[0]), dim=1, largest=largest, sorted=True)
        block_i += start
        if best_d is None:
            best_d, best_i = block_d, block_i
            continue
        merged_d = torch.cat([best_d, block_d], dim=1)
        merged_i = torch.cat([best_i, block_i], dim=1)
        best_d, order = merged_d.topk(k, dim=1, largest=largest, sorted=True)
        best_i = merged_i.gather(1, order)
    return best_d, best_i
