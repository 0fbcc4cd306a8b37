"""Exact k-nearest-neighbour search over query chunks: the one search every retrieval metric reads.

Neighbours come in the order FAISS's flat index (and so PML's ``FaissKNN``) gives them:
nearest first, equal distances by ascending reference index. That order is made exact, not
approximate, by sorting 64-bit keys ``(order-preserving bits of the distance) * 2**32 + index``:
keys are unique, so "the k smallest keys" is well defined even when many distances tie (for
example duplicated embeddings), and a plain value sort gives the (distance, index) order.

Per query chunk:

1. one BLAS matmul gives the chunk's distances to every reference (squared L2 as FAISS computes
   it, ``|q|^2 + |r|^2 - 2 q.r`` clamped at 0, or negated cosine similarity / inner product),
   into one buffer reused by every chunk. Every input (integer, float64, numpy) is searched as
   float32, as PML's FAISS search does: there is no second arithmetic whose ties or rounding
   could disagree with it;
2. the k smallest of each row, by one of these, all ending in sorted keys:

   - CPU, k >= 256: a cut per row read off a random sample of columns; each row's entries at
     or below it are keyed and sorted in cache, row by row in NumPy threads; a row whose cut
     fell short (rare) is redone by the next path;
   - ``torch.topk`` of the k+1 smallest (CUDA; CPU with k < 256): when the k-th and (k+1)-th
     distances differ, the k smallest are exactly determined and only their keys are sorted;
     the rare rows where they tie are redone from the keys of the whole row;
   - when k covers (nearly) every reference, the keys of the whole row are sorted;

   - a full ranking whose metrics read only where each query's own class falls
     (:class:`GroupSearch`, CPU): :func:`group_ranks` lists those ranks without ordering
     the other neighbours, ties across classes decided by the same keys;

3. on CPU, float L2 data and small k (<= 64) go to FAISS's own flat search instead
   (:meth:`ReferenceSet.faiss_nearest`, BLAS blocks + a k-heap per query, about twice as fast
   as matmul + topk there); its heap keeps equal distances in index order, so the order is the
   same.

Chunks are sized by the memory budget of the query's device (:mod:`metricssl.core.chunking`;
on CUDA a share of its free memory), so memory is O(chunk x references), never
O(queries x references); on CUDA everything stays in torch on the device.

Self-matches (``exclude_self=True``: query row i is reference row i) are left out, which gives
the same neighbours as PML's "search k+1 and drop the query itself".

Distances are float32 BLAS results, like FAISS's: their last bits can differ from FAISS's (and
between chunk sizes), so two references whose distances differ by about one rounding error may
come out in either order; exact ties are always ordered by index.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, cached_property
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.chunking import budget_for, row_chunks, rows_per_chunk
from ..core.validation import check_choice, check_number
from .inputs import as_embeddings, resolve_device

try:
    import faiss
except ImportError:  # optional here: without FAISS every search takes the torch path
    faiss = None

METRICS = ("l2", "cosine", "ip")
# Metrics whose block holds negated similarities (larger similarity = closer).
_SIMILARITIES = ("cosine", "ip")

_LOW_BITS = 32
_LOW_MASK = (1 << _LOW_BITS) - 1
# The low 32 bits of a key hold the column, or (column * 2 + tag) when a tag bit rides along.
_MAX_REFERENCES = 1 << (_LOW_BITS - 1)
# Up to this k, FAISS's flat search (BLAS blocks + a k-heap per query) beats matmul + topk on
# CPU (10k queries x 60k references: 1.4-2.3x faster at k = 1..64, break-even at 128); at large
# k the heap costs more than torch.topk (k = 6001: ~4.3 s vs 1.8 s).
_FAISS_MAX_K = 64
# Progress bars only for searches that take a noticeable time (queries x references).
_PROGRESS_MIN_WORK = 200_000_000
# Smallest chunk of a mirrored self-search (_SelfBlocks): smaller ones multiply inefficiently.
_MIN_MIRRORED_ROWS = 256


def sortable_keys(
    values: torch.Tensor, low_bits: torch.Tensor, nonnegative: bool = False
) -> torch.Tensor:
    """int64 keys that sort like ``(values, low_bits)`` lexicographically.

    ``values`` is float32, ``low_bits`` int64 in [0, 2**32) (the column index). The float's bit
    pattern is mapped to an int32 with the same order (negative floats have their magnitude
    bits flipped) and shifted above ``low_bits``. ``nonnegative=True`` (values known to be
    >= +0.0, e.g. clamped squared distances) skips the sign handling: those bits are in order.
    """
    if nonnegative:
        bits = values.view(torch.int32)
    else:
        bits = (values + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0, which FAISS ties
        bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return bits.to(torch.int64).mul_(1 << _LOW_BITS).add_(low_bits)


def key_columns(keys: torch.Tensor) -> torch.Tensor:
    """The column indices stored in the low bits of :func:`sortable_keys`."""
    return keys & _LOW_MASK


def sort_rows_(keys: torch.Tensor) -> torch.Tensor:
    """Sort each row of an int64 tensor ascending, in place when possible; returns the result.

    On CPU NumPy's sort (it releases the GIL) runs on row blocks in parallel threads;
    elsewhere ``torch.sort``.
    """
    if keys.device.type != "cpu" or keys.shape[1] < 2:
        return torch.sort(keys, dim=1).values if keys.shape[1] > 1 else keys
    keys = keys.contiguous()
    arr = keys.numpy()
    if keys.numel() < 1 << 16:
        arr.sort(axis=1)
    else:
        _run_threads(lambda block: arr[block.start : block.stop].sort(axis=1), keys.shape[0])
    return keys


def squared_norms(x: torch.Tensor, name: str) -> torch.Tensor:
    """Row-wise squared L2 norms, in row chunks (no full-size temporary).

    Raises ``ValueError`` when a norm is not finite: distances built from it would be NaN/Inf.
    """
    per_row = x.shape[1] * x.element_size()
    chunks = row_chunks(x.shape[0], per_row, device=x.device)
    norms = torch.cat([x[rows].pow(2).sum(dim=1) for rows in chunks])
    # Distances reach |q|^2 + |r|^2 <= 2 max|x|^2, which must stay finite in float32.
    if not bool(torch.isfinite(2 * norms.max())):
        raise ValueError(
            f"{name} values are too large: squared distances overflow float32 (or NaN/Inf)"
        )
    return norms


class ReferenceSet:
    """References prepared once for repeated distance blocks.

    Args:
        reference: (n, d) float32 tensor on the device where the search runs.
        metric: ``"l2"`` (squared Euclidean, as ``faiss.IndexFlatL2``), ``"cosine"`` or
            ``"ip"`` (inner product, as ``faiss.IndexFlatIP``); for the last two the block holds
            negated similarities, so that smaller is closer for all three.
    """

    def __init__(self, reference: torch.Tensor, metric: str = "l2"):
        check_choice("metric", metric, METRICS)
        if reference.shape[0] >= _MAX_REFERENCES:
            raise ValueError(f"at most {_MAX_REFERENCES - 1} references are supported")
        self.metric = metric
        self.vectors = reference
        self.sq_norms = squared_norms(reference, "reference")
        # Cosine: the block's columns are scaled by -1/|r| rather than normalising a copy of
        # the references, so the preparation costs one float per reference.
        self._neg_inv_norms = (
            -1 / self.sq_norms.sqrt().clamp(min=1e-12) if metric == "cosine" else None
        )

    @property
    def size(self) -> int:
        return self.vectors.shape[0]

    def distances(
        self,
        queries: torch.Tensor,
        out: torch.Tensor | None = None,
        columns: slice = slice(None),
    ) -> torch.Tensor:
        """(len(queries), size) float32 block; smaller means closer.

        ``out``: a (len(queries), size) float32 buffer to write into. A chunked search reuses
        one: a fresh block of hundreds of MB per chunk costs the kernel's page faults on every
        first touch (as much as the matrix product itself at d = 64). ``columns``: only those
        references' columns (``out`` then has their number of columns).
        """
        vectors = self.vectors[columns]
        if self.metric == "l2":
            # FAISS's formula and order of operations: (|q|^2 + |r|^2) - 2 q.r, then clamp at 0
            # (identical vectors can round to a tiny negative value).
            q_norms = squared_norms(queries, "query")[:, None]
            block = torch.add(q_norms, self.sq_norms[None, columns], out=out)
            return block.addmm_(queries, vectors.T, alpha=-2).clamp_(min=0)
        if self.metric == "ip":
            return torch.mm(queries, vectors.T, out=out).neg_()
        q = F.normalize(queries, dim=1)
        return torch.mm(q, vectors.T, out=out).mul_(self._neg_inv_norms[None, columns])

    def uses_faiss(self, k: int, n_queries: int) -> bool:
        """Whether :meth:`faiss_nearest` serves ``k`` neighbours of ``n_queries`` queries.

        Float L2 data on CPU, small k, and enough queries for FAISS's BLAS path (below
        ``distance_compute_blas_threshold`` query values it scans with its SIMD loop, up to 25x
        slower than a matmul against many references).
        """
        return (
            faiss is not None
            and self.metric == "l2"
            and self.vectors.device.type == "cpu"
            and k < self.size - 1
            and k <= _FAISS_MAX_K
            and n_queries >= faiss_min_rows(self.vectors.shape[1])
        )

    def faiss_nearest(
        self, queries: torch.Tensor, k: int, self_columns: torch.Tensor | None = None
    ) -> Neighbors:
        """:func:`nearest`'s result, from FAISS's flat L2 search (see :meth:`uses_faiss`).

        FAISS keeps equal distances in ascending reference order, so the order is the same
        (distance, index) order. The self match is left out as PML does: search k + 1 and drop
        the query's own row, or the last neighbour when the own row is not among them.
        """
        rows, n_search = queries.shape[0], k + int(self_columns is not None)
        values = np.empty((rows, n_search), dtype=np.float32)
        columns = np.empty((rows, n_search), dtype=np.int64)
        faiss.knn_L2sqr(
            faiss.swig_ptr(np.ascontiguousarray(queries.numpy())),
            faiss.swig_ptr(self._vectors_np),
            self.vectors.shape[1],
            rows,
            self.size,
            n_search,
            faiss.swig_ptr(values),
            faiss.swig_ptr(columns),
            faiss.swig_ptr(self._sq_norms_np),
        )
        values, columns = torch.from_numpy(values), torch.from_numpy(columns)
        if self_columns is not None:
            keep = columns != self_columns[:, None]
            keep[keep.all(dim=1), -1] = False
            values, columns = values[keep].view(rows, k), columns[keep].view(rows, k)
        return Neighbors(columns, values)

    @cached_property
    def _vectors_np(self) -> np.ndarray:
        return np.ascontiguousarray(self.vectors.numpy(), dtype=np.float32)

    @cached_property
    def _sq_norms_np(self) -> np.ndarray:
        return np.ascontiguousarray(self.sq_norms.numpy(), dtype=np.float32)

    def similarities_from(self, block_values: torch.Tensor) -> torch.Tensor:
        """Similarities from this metric's block values (cosine and ip metrics only)."""
        if self.metric not in _SIMILARITIES:
            raise ValueError("similarities are only defined for the cosine and ip metrics")
        return -block_values


class Neighbors(NamedTuple):
    """The selected neighbours of a chunk of queries, nearest first."""

    columns: torch.Tensor  # (rows, k) int64 reference indices
    values: torch.Tensor | None  # (rows, k) float32 block values, when asked for


# On CPU, for k at least this large, the k smallest of a row are found by a threshold from a
# column sample, then a compare, compact and sort of each row in cache
# (:func:`_keys_below_threshold`), rather than by torch.topk, whose large-k selection costs
# ~5 ns per entry (10k x 60k, k = 6000: 2.3 s), followed by a sort of its output.
_THRESHOLD_MIN_K = 256
# Columns sampled to place the threshold, and its margin in binomial standard deviations:
# with 3 sigma a row falls short (and is redone with torch.topk) about once in 700, and rows
# keep ~15% more candidates than k (10k x 60k, k = 6000), which the key sort pays for.
_THRESHOLD_SAMPLE = 4096
_THRESHOLD_SIGMAS = 3.0


def nearest(
    block: torch.Tensor,
    k: int,
    self_columns: torch.Tensor | None = None,
    nonnegative: bool = False,
    want_values: bool = False,
) -> Neighbors:
    """The ``k`` smallest entries of each row, in (value, column) order.

    Every path ends in the same exact order: int64 keys ``(value bits, column)`` (see
    :func:`sortable_keys`) are unique, so "the k smallest keys" is well defined however many
    values tie, and sorting them gives equal values by ascending column.

    Args:
        block: (rows, n) float32 distances (:meth:`ReferenceSet.distances`);
            overwritten at ``self_columns``.
        k: neighbours per row, 1 <= k <= n - (1 if self_columns is given else 0).
        self_columns: (rows,) column of each row's own entry, to leave out.
        nonnegative: every value is >= +0.0 (enables a cheaper key construction).
        want_values: also return the selected block values.

    Returns:
        :class:`Neighbors`.
    """
    rows, n = block.shape
    if self_columns is not None:
        # +inf sorts after every finite distance (inputs are checked finite), so the self
        # match is never among the k <= n - 1 selected.
        block[torch.arange(rows, device=block.device), self_columns] = float("inf")
    keys = None
    if k + 1 >= n and block.device.type == "cpu":
        keys = _smallest_keys_per_row(block, k, nonnegative)[0]
    elif k + 1 >= n:
        keys = _sorted_keys(block, torch.arange(n, device=block.device), nonnegative)[:, :k]
    elif block.device.type == "cpu" and k >= _THRESHOLD_MIN_K:
        keys = _keys_below_threshold(block, k, nonnegative)
    if keys is None:
        keys = _keys_by_topk(block, k, nonnegative)
    columns = key_columns(keys)
    values = block.gather(1, columns) if want_values else None
    return Neighbors(columns, values)


def _sorted_keys(values: torch.Tensor, cols: torch.Tensor, nonnegative: bool) -> torch.Tensor:
    """Each row's keys of ``values`` at ``cols``, sorted."""
    return sort_rows_(sortable_keys(values, cols, nonnegative))


def _keys_by_topk(block: torch.Tensor, k: int, nonnegative: bool) -> torch.Tensor:
    values, cols = block.topk(k + 1, dim=1, largest=False, sorted=False)
    # The (k+1)-th smallest value: if the k-th ties with it, which tied entries make the cut
    # depends on the column order, so those rows are redone from whole-row keys.
    cut = values.max(dim=1, keepdim=True).values
    ambiguous = (values == cut).sum(dim=1) > 1
    keys = _sorted_keys(values, cols, nonnegative)[:, :k]
    if bool(ambiguous.any()):
        redo = ambiguous.nonzero().squeeze(1)
        all_cols = torch.arange(block.shape[1], device=block.device)
        keys[redo] = _sorted_keys(block[redo], all_cols, nonnegative)[:, :k]
    return keys


@cache
def _sample_columns(n: int, m: int, device: torch.device) -> torch.Tensor:
    # A fixed pseudo-random subset: a strided one aliases with periodic reference orders
    # (e.g. labels cycling through the classes) and misjudges the row's quantile.
    return (
        torch.randperm(n, generator=torch.Generator().manual_seed(0))[:m].sort().values.to(device)
    )


def _keys_below_threshold(block: torch.Tensor, k: int, nonnegative: bool) -> torch.Tensor | None:
    """The sorted keys of the ``k`` smallest entries of each row, or None when not worth it.

    A cut per row is read off a column sample (its ``want``-th smallest value, ``want`` a few
    standard deviations above the sample's expected count below the k-th value); each row's
    entries at or below it are the candidates (:func:`_smallest_keys_per_row`). A row with at
    least k candidates holds its k smallest keys exactly (anything left out is larger than the
    cut, hence than its k-th value); rows that fall short are redone with
    :func:`_keys_by_topk`.
    """
    rows, n = block.shape
    m = min(_THRESHOLD_SAMPLE, n // 8)  # a sample near the row's size costs a row's topk
    p = k / n
    want = math.ceil(m * p + _THRESHOLD_SIGMAS * math.sqrt(m * p * (1 - p))) + 1
    if want >= m // 2:  # most of the row would be kept: topk is as good
        return None
    sample = block[:, _sample_columns(n, m, block.device)]
    cuts = sample.topk(want, dim=1, largest=False, sorted=False).values.amax(dim=1)
    out, short = _smallest_keys_per_row(block, k, nonnegative, cuts.numpy())
    if short.any():
        redo = torch.from_numpy(np.flatnonzero(short))
        out[redo] = _keys_by_topk(block[redo], k, nonnegative)
    return out


def _smallest_keys_per_row(
    block: torch.Tensor, k: int, nonnegative: bool, cuts: np.ndarray | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """The sorted keys of the ``k`` smallest entries of each row of a CPU block, row by row in
    NumPy threads: a row's entries, candidates and keys stay in cache.

    With ``cuts``, a row's candidates are its entries at or below its cut, and a row with fewer
    than k of them is flagged in ``short`` (its output row is left undefined); without, every
    entry is a candidate.

    Returns:
        ``(keys, short)``: (rows, k) int64 tensor and (rows,) bool array.
    """
    rows, n = block.shape
    values = block.numpy()
    out = torch.empty(rows, k, dtype=torch.int64)
    out_np = out.numpy()
    short = np.zeros(rows, dtype=bool)
    every_column = np.arange(n)

    def select(row_numbers: range) -> None:
        for i in row_numbers:
            row = values[i]
            if cuts is None:
                keys = _sortable_keys_np(row, every_column, nonnegative)
            else:
                cols = np.flatnonzero(row <= cuts[i])
                if cols.size < k:
                    short[i] = True
                    continue
                keys = _sortable_keys_np(row[cols], cols, nonnegative)
            keys.sort()
            out_np[i] = keys[:k]

    _run_threads(select, rows)
    return out, short


def _sortable_keys_np(values: np.ndarray, low_bits: np.ndarray, nonnegative: bool) -> np.ndarray:
    """:func:`sortable_keys` of one CPU row, in NumPy (no per-call dispatch or thread pool)."""
    if nonnegative:
        bits = values.view(np.int32)
    else:
        bits = (values + np.float32(0.0)).view(np.int32)
        bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    keys = bits.astype(np.int64)
    keys <<= _LOW_BITS
    keys |= low_bits
    return keys


def _run_threads(work: Callable[[range], None], n_rows: int) -> None:
    """``work`` over consecutive row ranges, one per thread, as many threads as torch uses
    (NumPy's sort and array operations release the GIL)."""
    n_threads = max(1, min(torch.get_num_threads(), os.cpu_count() or 1, n_rows))
    if n_threads == 1:
        work(range(n_rows))
        return
    bounds = [round(i * n_rows / n_threads) for i in range(n_threads + 1)]
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(work, [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]))


class GroupRanks(NamedTuple):
    """Where each query's own group falls in its full ranking (see :func:`group_ranks`)."""

    ranks: torch.Tensor  # (rows, m) int64 1-based ranks, ascending; padding after ``counts``
    counts: torch.Tensor  # (rows,) int64 ranks listed per row


class ColumnGroups(NamedTuple):
    """Columns partitioned into groups (e.g. references by label): group g's columns are
    ``order[bounds[g]:bounds[g + 1]]``."""

    order: torch.Tensor  # (n,) int64
    bounds: torch.Tensor  # (groups + 1,) int64

    @classmethod
    def from_codes(cls, codes: torch.Tensor, n_groups: int) -> ColumnGroups:
        """Groups of the columns with equal ``codes`` (int, in [0, n_groups))."""
        order = torch.argsort(codes, stable=True).cpu()
        sizes = torch.bincount(codes.cpu().to(torch.int64), minlength=n_groups)
        return cls(order, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]))

    @property
    def largest(self) -> int:
        return int((self.bounds[1:] - self.bounds[:-1]).max()) if len(self.bounds) > 1 else 0


def group_ranks(
    block: torch.Tensor,
    groups: ColumnGroups,
    row_groups: torch.Tensor,
    self_columns: torch.Tensor | None = None,
) -> GroupRanks:
    """The ranks of each row's group members in the row's full ranking, without sorting keys.

    The ranking is :func:`nearest`'s over every column (value, then column index; the row's
    own column left out), but only the ranks of the row's group are listed: what the
    retrieval metrics of a full ranking read (a query's relevant references). Per CPU row,
    in NumPy threads: the group's values and the whole row are sorted as float32 (no 64-bit
    keys, no column order), and a member's rank is its position among the row's values plus
    its place among equal members. That needs no index order unless a member's value equals
    a non-member's; those rows (found by one comparison per member) are ranked from the
    exact keys, as :func:`nearest` orders them.

    Args:
        block: (rows, n) float32 CPU block (:meth:`ReferenceSet.distances`); overwritten at
            ``self_columns``.
        groups: the columns of each group.
        row_groups: (rows,) group of each row, in [0, groups); a negative one lists nothing.
        self_columns: (rows,) column of each row's own entry, to leave out.

    Returns:
        :class:`GroupRanks`; a row's ranks hold every member but its own column.
    """
    rows, n = block.shape
    if self_columns is not None:
        block[torch.arange(rows), self_columns] = float("inf")  # ranked last, then dropped
    values = block.numpy()
    row_group = row_groups.tolist()
    own = self_columns.tolist() if self_columns is not None else [-1] * rows
    order, bounds = groups.order.numpy(), groups.bounds.tolist()
    sizes = [bounds[g + 1] - bounds[g] for g in set(row_group) if g >= 0]
    ranks = np.zeros((rows, max(sizes, default=0)), dtype=np.int64)
    counts = np.zeros(rows, dtype=np.int64)
    steps = np.arange(1, ranks.shape[1] + 2, dtype=np.int64)
    column_group = np.empty(n, dtype=np.int64)
    column_group[order] = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
    own_group = [column_group[c] if c >= 0 else -1 for c in own]

    def rank_rows(row_numbers: range) -> None:
        for i in row_numbers:
            g = row_group[i]
            if g < 0:
                continue
            row, cols = values[i], order[bounds[g] : bounds[g + 1]]
            mine = row[cols]
            mine.sort()
            if own[i] >= 0 and own_group[i] == g:
                # The own entry is +inf, so sorted last among the members: leave it out.
                mine = mine[:-1]
            m = mine.size
            if m == 0:
                continue
            everything = np.sort(row)
            below = np.searchsorted(everything, mine)  # entries of smaller value
            if (mine[1:] == mine[:-1]).any():
                # Members of equal value take consecutive ranks (their order among themselves
                # changes no relevance): below counts the equal members before the run, so
                # the rank adds the member's place in the run.
                starts = np.flatnonzero(np.r_[True, mine[1:] != mine[:-1]])
                lengths = np.diff(np.r_[starts, m])
                ranks[i, :m] = below + (steps[:m] - np.repeat(starts, lengths))
                after_run = below + np.repeat(lengths, lengths)
            else:
                after_run = below + 1
                ranks[i, :m] = after_run
            # A non-member of equal value sits right after the run's copies in ``everything``:
            # then the index order decides, which only the exact keys know.
            tied = (everything.take(after_run, mode="clip") == mine) & (after_run < n)
            if tied.any():
                ranks[i, np.flatnonzero(tied)] = _tied_ranks(
                    row, cols[cols != own[i]], mine[tied], everything
                )
            counts[i] = m

    _run_threads(rank_rows, rows)
    return GroupRanks(torch.from_numpy(ranks), torch.from_numpy(counts))


def _tied_ranks(
    row: np.ndarray, members: np.ndarray, tied: np.ndarray, ordered: np.ndarray
) -> np.ndarray:
    """Ranks, ascending, of the members whose value some non-member shares.

    Within a run of equal values the columns decide (:func:`nearest`'s order), so only the
    row's entries of those values are keyed and sorted: a member's rank is the number of
    smaller values, plus its place among the keys of its own value.

    Args:
        row: the row's values; members: the members' columns; tied: the members' tied values
            (sorted); ordered: the row's values, sorted.
    """
    values = np.unique(tied)
    equal = np.flatnonzero(np.isin(row, values))
    keys = _sortable_keys_np(row[equal], equal, False)
    keys.sort()
    mine = members[np.isin(row[members], values)]
    mine_keys = _sortable_keys_np(row[mine], mine, False)
    mine_keys.sort()
    # The keys of (value, column 0): where each value's run starts among ``keys``.
    run_starts = np.searchsorted(keys, mine_keys & ~_LOW_MASK)
    smaller = np.searchsorted(ordered, row[mine_keys & _LOW_MASK])
    return smaller + (np.searchsorted(keys, mine_keys) - run_starts) + 1


@dataclass(frozen=True)
class Search:
    """One search run on every chunk.

    Args:
        reference: the prepared references (and so the metric).
        k: neighbours kept per query.
        want_values: return the block values of the neighbours.
    """

    reference: ReferenceSet
    k: int
    want_values: bool = False


@dataclass(frozen=True)
class GroupSearch:
    """A search that ranks every reference for each query but returns only where the query's
    own group falls (:func:`group_ranks`): a full ranking's retrieval metrics without sorting
    it. CPU only.

    Args:
        reference: the prepared references.
        groups: the reference columns of each group.
        query_groups: (queries,) group of each query (negative: none).
    """

    reference: ReferenceSet
    groups: ColumnGroups
    query_groups: torch.Tensor


def faiss_min_rows(dim: int) -> int:
    """Fewest queries for which FAISS's flat search takes its BLAS path."""
    return -(-faiss.cvar.distance_compute_blas_threshold // dim)


def search_bytes_per_row(n_ref: int, k: int, via_faiss: bool = False) -> int:
    """Scratch bytes one query row needs in :func:`nearest` (distances, keys, top-k).

    FAISS's own scratch is a fixed block of distances, so its rows only hold their results.
    """
    if via_faiss:
        return 24 * (k + 1)
    full = k + 1 >= n_ref
    # The block, then keys and columns of every rank (whole rows) or of the top k + 1 (topk's
    # values and indices too; the CPU per-row paths hold only one row's candidates per thread).
    return 4 * n_ref + (16 * n_ref if full else 40 * (k + 1))


def balanced_chunks(n_rows: int, max_rows: int) -> list[slice]:
    """Consecutive slices of at most ``max_rows`` rows, all of nearly equal size."""
    n_chunks = -(-n_rows // max(1, max_rows))
    bounds = [round(i * n_rows / n_chunks) for i in range(n_chunks + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


class _SelfBlocks:
    """Distance blocks of a set against itself, each pair of chunks multiplied once.

    When the queries are the references the block is symmetric: chunk ``r``'s columns of an
    earlier chunk ``p`` are chunk ``p``'s block at chunk ``r``'s columns, transposed. Those
    pieces are kept from ``p`` until ``r`` uses them (at most about ``n**2`` bytes, a quarter of
    the float32 matrix, halfway through), so the chunks multiply only the columns from their
    own first row on: ``(N + 1) / (2 N)`` of the product for ``N`` chunks.
    """

    def __init__(self, reference: ReferenceSet, chunks: Sequence[slice]):
        self.reference, self.chunks = reference, list(chunks)
        self.kept: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def fits(n: int, device: torch.device) -> bool:
        return n * n <= budget_for(device)

    def block(self, r: int, queries: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        start = self.chunks[r].start
        for p in range(r):
            out[:, self.chunks[p]] = self.kept.pop((p, r)).T
        self.reference.distances(queries, out=out[:, start:], columns=slice(start, None))
        for later in range(r + 1, len(self.chunks)):
            self.kept[(r, later)] = out[:, self.chunks[later]].clone()
        return out


def iter_neighbors(
    query: torch.Tensor,
    searches: Sequence[Search | GroupSearch],
    exclude_self: bool = False,
    extra_bytes_per_row: int = 0,
    progress: bool | None = None,
    desc: str = "k-NN search",
) -> Iterator[tuple[slice, list[Neighbors]]]:
    """Run ``searches`` chunk by chunk over ``query``.

    Yields ``(rows, [result of each search])``: :class:`Neighbors` of a :class:`Search`,
    :class:`GroupRanks` of a :class:`GroupSearch`. ``extra_bytes_per_row`` is what the caller
    allocates per query row while it consumes a chunk, so that the chunk fits the memory budget.
    """
    n_q = query.shape[0]
    n_ref = searches[0].reference.size
    lists = [s for s in searches if isinstance(s, Search)]
    via_faiss = len(lists) == len(searches) and all(s.reference.uses_faiss(s.k, n_q) for s in lists)
    per_row = max(
        # A group search holds the block and, per row, the ranks of its group and what the
        # metrics derive from them.
        search_bytes_per_row(n_ref, s.k, via_faiss)
        if isinstance(s, Search)
        else 4 * n_ref + 32 * s.groups.largest
        for s in searches
    )
    per_row += extra_bytes_per_row + 12 * sum(s.k for s in lists)  # + the caller's results
    max_rows = rows_per_chunk(per_row, device=query.device)  # CUDA: from its free memory
    if via_faiss:
        # Chunks as large as FAISS's query block (progress bars still move), and at least
        # twice its BLAS minimum so that every balanced chunk takes the BLAS path.
        block = max(faiss.cvar.distance_compute_blas_query_bs, 2 * faiss_min_rows(query.shape[1]))
        max_rows = min(max_rows, block)
    # Queries that are the references: symmetric blocks, each pair of chunks multiplied once
    # (_SelfBlocks), in at least 8 chunks so that about half of the product is left out.
    mirrored = [
        exclude_self
        and s.reference.vectors is query
        # Not cosine: its block scales rows and columns differently, so (i, j) and (j, i)
        # round apart, and exactly equal similarities would no longer tie.
        and s.reference.metric != "cosine"
        and not (isinstance(s, Search) and s.reference.uses_faiss(s.k, n_q))
        and _SelfBlocks.fits(n_ref, query.device)
        for s in searches
    ]
    if any(mirrored):
        max_rows = min(max_rows, max(_MIN_MIRRORED_ROWS, -(-n_q // 8)))
    chunks = balanced_chunks(n_q, max_rows)
    selves = [_SelfBlocks(s.reference, chunks) if m else None for s, m in zip(searches, mirrored)]
    # One distance buffer per search, made on first use and reused by every chunk after it
    # (see ReferenceSet.distances).
    largest_chunk = max((c.stop - c.start for c in chunks), default=0)
    buffers: list[torch.Tensor | None] = [None] * len(searches)
    show = progress if progress is not None else (n_q * n_ref >= _PROGRESS_MIN_WORK)
    bar = tqdm(total=n_q, desc=desc, unit="query", disable=not show or len(chunks) < 2)
    try:
        for chunk, rows in enumerate(chunks):
            q = query[rows]
            self_cols = (
                torch.arange(rows.start, rows.stop, device=query.device) if exclude_self else None
            )
            results = []
            for i, s in enumerate(searches):
                if isinstance(s, Search) and s.reference.uses_faiss(s.k, rows.stop - rows.start):
                    results.append(s.reference.faiss_nearest(q, s.k, self_cols))
                    continue
                if buffers[i] is None:
                    buffers[i] = torch.empty(largest_chunk, n_ref, device=query.device)
                out = buffers[i][: q.shape[0]]
                if selves[i] is not None:
                    block = selves[i].block(chunk, q, out)
                else:
                    block = s.reference.distances(q, out=out)
                if isinstance(s, GroupSearch):
                    results.append(group_ranks(block, s.groups, s.query_groups[rows], self_cols))
                    continue
                nonnegative = s.reference.metric == "l2"
                results.append(nearest(block, s.k, self_cols, nonnegative, s.want_values))
            yield rows, results
            bar.update(rows.stop - rows.start)
    finally:
        bar.close()


def knn(
    query,
    reference=None,
    k: int = 1,
    metric: str = "l2",
    exclude_self: bool | None = None,
    device=None,
    progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of every query row, searched in memory-bounded query chunks.

    Args:
        query: (nq, d) tensor (any device) or numpy array.
        reference: (n, d) database; None searches ``query`` against itself.
        k: neighbours per query (at most n, or n - 1 when the self-match is excluded).
        metric: ``"l2"`` (squared Euclidean distances, ascending, as ``faiss.IndexFlatL2``) or
            ``"cosine"`` / ``"ip"`` (cosine similarities / inner products, descending).
        exclude_self: leave out reference row i for query row i (default: True exactly when
            ``reference`` is None).
        device: where to compute (default: the query's device).
        progress: show a progress bar (default: only for long searches).

    Returns:
        ``(distances, indices)``, float32 and int64 tensors of shape (nq, k) on ``device``;
        equal distances are ordered by ascending reference index.

    Example:
        >>> import torch
        >>> from metricssl.eval.knn import knn
        >>> x = torch.randn(1000, 32)
        >>> distances, indices = knn(x, k=5)  # excludes each point itself
        >>> indices.shape
        torch.Size([1000, 5])
    """
    check_choice("metric", metric, METRICS)
    dev = resolve_device(device, query)
    q = as_embeddings(query, "query", dev)
    r = q if reference is None else as_embeddings(reference, "reference", dev)
    if r.shape[1] != q.shape[1]:
        raise ValueError(f"query has dimension {q.shape[1]} but reference has {r.shape[1]}")
    if exclude_self is None:
        exclude_self = reference is None
    if exclude_self and r.shape[0] < q.shape[0]:
        raise ValueError("exclude_self needs reference row i for every query row i")
    available = r.shape[0] - int(exclude_self)
    check_number("k", k, low=1, high=available, integer=True)
    ref = ReferenceSet(r, metric)
    distances = torch.empty(q.shape[0], k, dtype=torch.float32, device=dev)
    indices = torch.empty(q.shape[0], k, dtype=torch.int64, device=dev)
    search = Search(ref, k, want_values=True)
    for rows, [found] in iter_neighbors(q, [search], exclude_self, progress=progress):
        indices[rows] = found.columns
        vals = found.values
        distances[rows] = ref.similarities_from(vals) if metric in _SIMILARITIES else vals
    return distances, indices


class ExactKNN:
    """A chunked, exact drop-in for PML's ``FaissKNN`` as an ``AccuracyCalculator(knn_func=...)``.

    Called as ``knn_func(query, k, reference, ref_includes_query)`` and returns
    ``(distances, indices)`` with PML's conventions: squared L2 distances (or cosine
    similarities, or inner products), the self-match removed when ``ref_includes_query``.

    Args:
        metric: ``"l2"``, ``"cosine"`` or ``"ip"``.
        progress: show a progress bar (default: only for long searches).

    Example:
        >>> import torch
        >>> from metricssl.eval.knn import ExactKNN
        >>> knn_func = ExactKNN()
        >>> distances, indices = knn_func(torch.randn(100, 8), 5, torch.randn(50, 8))
    """

    def __init__(self, metric: str = "l2", progress: bool | None = None):
        check_choice("metric", metric, METRICS)
        self.metric = metric
        self.progress = progress

    def __call__(self, query, k, reference=None, ref_includes_query=False):
        return knn(
            query,
            query if reference is None else reference,
            k,
            metric=self.metric,
            exclude_self=ref_includes_query,
            progress=self.progress,
        )
