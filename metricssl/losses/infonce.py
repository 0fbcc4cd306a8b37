"""The one InfoNCE of metricssl: every contrastive loss and method computes its loss here.

For a query ``q`` with a positive key ``k+`` and negative keys ``k-``, at temperature ``T``::

    loss(q) = -w * q.k+ / T + log( exp(q.k+ / T) + sum_k- exp(q.k- / T) )    (InfoNCE)
    loss(q) = -w * q.k+ / T + log(                 sum_k- exp(q.k- / T) )    (decoupled: DCL)

with ``w = 1`` unless a ``positive_weight`` is given (DCLW). van den Oord, Li and Vinyals,
"Representation Learning with Contrastive Predictive Coding", arXiv 2018; the decoupled form
is Yeh, Hong, Hsu, Liu, Chen and LeCun, "Decoupled Contrastive Learning", ECCV 2022.

API:

- :func:`info_nce_terms` ``(positive, negative_lse, *, decoupled=False, positive_weight=None)``:
  the per-anchor loss from the positive's logit and the log-sum-exp of the negatives' logits.
  It is the formula above, in one place. :class:`~metricssl.losses.NTXentLoss` (many
  positives per anchor, negatives chosen by labels or a miner) calls it once per positive pair.
- :func:`info_nce` ``(queries, keys=None, positive_index=None, *, temperature, extra_keys=None,
  batch_negatives=True, gather=False, normalize=False, decoupled=False, positive_weight=None,
  chunk_size=None, reduction="mean")``: one positive per query, every other key a negative.
  The callers, each one call:

  - SimCLR, DCL: ``info_nce(cat(z1, z2), None, cat(arange(B) + B, arange(B)), gather=True,
    normalize=True)``, i.e. :func:`two_view_info_nce` ``(z1, z2)``: the queries are their own
    keys (a query is never its own negative), each one's positive the other view.
  - MoCo v3, NNCLR: ``info_nce(q, k, gather=True)``: key ``i`` (of this rank's rows) is query
    ``i``'s positive; every other key, of every rank, is a negative.
  - MoCo v2: ``info_nce(q, k, extra_keys=queue, batch_negatives=False)``: only the queue's
    keys are negatives.
  - NPID, PIRL: ``info_nce(v, bank[i], extra_keys=bank[sampled], batch_negatives=False)``
    (:meth:`~metricssl.ssl.memory_bank.MemoryBank.info_nce`).

How it is computed: in float32 (float64 stays float64) with autocast off, whatever the input
dtype; the negatives' log-sum-exp is numerically stable (``torch.logsumexp``, the positive's
term added by ``softplus``). Under torch.distributed, ``gather=True`` gathers the keys from
every rank with :func:`~metricssl.core.distributed.gather_with_grad`, so the averaged DDP
gradients equal one process's gradient on the global batch (every rank must hold the same
number of keys). The (queries x keys) logits are built in blocks of queries that fit the
memory budget (:mod:`metricssl.core.chunking`) or ``chunk_size``; with more than one block and
gradients on, each block's logits are recomputed in the backward pass (activation
checkpointing), so memory stays bounded for a large queue or bank.

Example:
    >>> import torch
    >>> from metricssl.losses.infonce import info_nce
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> ids = torch.arange(8)
    >>> loss = info_nce(torch.cat([z1, z2]), None, torch.cat([ids + 8, ids]),
    ...                 temperature=0.2, normalize=True)
    >>> queue = torch.randn(32, 16)
    >>> moco = info_nce(z1, z2, temperature=0.2, extra_keys=queue, batch_negatives=False)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..core import common as c_f
from ..core.chunking import rows_per_chunk
from ..core.distributed import gather_with_grad, rank, world_size
from ..core.validation import ArgumentError, check_bool, check_choice, check_number

REDUCTIONS = ("mean", "sum", "none")
# Intermediates per logit in a block: the logits, the masked copy and exp() in logsumexp.
_BYTES_PER_LOGIT = 3 * 4


def info_nce_terms(
    positive: torch.Tensor,
    negative_lse: torch.Tensor,
    *,
    decoupled: bool = False,
    positive_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-anchor InfoNCE losses from ``positive`` (the positive's logit ``s+ / T``) and
    ``negative_lse`` (``logsumexp`` of the negatives' logits), same shape.

    ``softplus(negative_lse - positive)`` is ``-log(exp(s+) / (exp(s+) + sum exp(s-)))``,
    exact where ``log(ratio)`` would underflow; an anchor without negatives
    (``negative_lse = -inf``) gets 0 with a zero gradient. ``decoupled`` leaves the positive
    out of the denominator: ``negative_lse - positive``. A ``positive_weight`` ``w``
    multiplies the positive's term ``-s+`` (DCLW).

    Example:
        >>> import torch
        >>> from metricssl.losses.infonce import info_nce_terms
        >>> info_nce_terms(torch.tensor([2.0]), torch.tensor([0.0]))  # -log(e^2 / (e^2 + 1))
        tensor([0.1269])
    """
    if decoupled:
        weighted = positive if positive_weight is None else positive_weight * positive
        return negative_lse - weighted
    loss = F.softplus(negative_lse - positive)
    if positive_weight is not None:
        loss = loss + (1 - positive_weight) * positive
    return loss


def info_nce(
    queries: torch.Tensor,
    keys: torch.Tensor | None = None,
    positive_index: torch.Tensor | None = None,
    *,
    temperature: float,
    extra_keys: torch.Tensor | None = None,
    batch_negatives: bool = True,
    gather: bool = False,
    normalize: bool = False,
    decoupled: bool = False,
    positive_weight: torch.Tensor | None = None,
    chunk_size: int | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """InfoNCE of each query against its positive key and its negative keys.

    Args:
        queries: (N, D) anchors (this rank's).
        keys: (M, D) keys (this rank's); None: the queries are their own keys, and a query
            is never its own negative (SimCLR's 2N views).
        positive_index: (N,) integer: the row of ``keys`` that is query ``i``'s positive;
            None: row ``i`` (``keys`` aligned with ``queries``). Required when ``keys`` is None.
            Its range is checked on the CPU only (on a GPU that would cost a synchronisation).
        temperature: ``T`` > 0.
        extra_keys: (K, D) negatives for every query (a queue or memory-bank rows); not
            gathered (each rank holds the same ones).
        batch_negatives: every key other than a query's positive (and itself) is a negative
            too; False: only ``extra_keys`` are (MoCo v2, NPID, PIRL).
        gather: the keys of every rank are keys (with gradient, see the module docstring);
            ``positive_index`` still counts this rank's rows. Needs ``batch_negatives``.
        normalize: L2-normalise queries and keys first (cosine similarities).
        decoupled: leave the positive out of the denominator (DCL).
        positive_weight: (N,) weight of each query's positive term (DCLW); None: 1.
        chunk_size: queries per block of logits; None: as many as the memory budget allows.
        reduction: ``"mean"`` or ``"sum"`` over this rank's queries, or ``"none"`` (N,).

    Returns:
        The loss in float32 (float64 for float64 queries).

    Raises:
        ValueError / TypeError naming the argument: shapes that do not fit, a bad option.
    """
    n = _check_inputs(queries, keys, positive_index, extra_keys, positive_weight)
    check_number("temperature", temperature, low=0, low_inclusive=False)
    for name, flag in (
        ("batch_negatives", batch_negatives),
        ("gather", gather),
        ("normalize", normalize),
        ("decoupled", decoupled),
    ):
        check_bool(name, flag)
    check_number("chunk_size", chunk_size, low=1, integer=True, allow_none=True)
    check_choice("reduction", reduction, REDUCTIONS)
    if gather and not batch_negatives:
        raise ArgumentError("gather=True needs batch_negatives=True: gathered keys are negatives")
    if keys is None and not batch_negatives:
        raise ArgumentError("keys=None (queries as keys) needs batch_negatives=True")

    with torch.autocast(device_type=queries.device.type, enabled=False):
        dtype = c_f.accumulation_dtype(queries.dtype)
        q = _prepare(queries, dtype, normalize)
        local_keys = q if keys is None else _prepare(keys, dtype, normalize)
        extra = None if extra_keys is None else _prepare(extra_keys, dtype, normalize)
        rows = torch.arange(n, device=q.device)
        positive_col = rows if positive_index is None else positive_index.to(q.device).long()
        all_keys, offset = local_keys, 0
        if gather and world_size() > 1:
            all_keys = gather_with_grad(local_keys)
            m = local_keys.shape[0]
            if all_keys.shape[0] != world_size() * m:
                raise ArgumentError(
                    "info_nce(gather=True) needs the same number of keys on every rank (this "
                    f"rank has {m}, all ranks together {all_keys.shape[0]})"
                )
            offset = rank() * m
            positive_col = positive_col + offset
        positive = (q * all_keys[positive_col]).sum(dim=1) / temperature
        self_col = rows + offset if keys is None else None
        negative_lse = _negative_lse(
            q,
            all_keys if batch_negatives else None,
            extra,
            positive_col,
            self_col,
            temperature,
            chunk_size,
        )
        weight = None if positive_weight is None else positive_weight.to(dtype)
        losses = info_nce_terms(positive, negative_lse, decoupled=decoupled, positive_weight=weight)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


def two_view_info_nce(
    z1: torch.Tensor,
    z2: torch.Tensor,
    *,
    temperature: float,
    gather: bool = False,
    normalize: bool = True,
    decoupled: bool = False,
    positive_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimCLR's InfoNCE of two aligned views (N, D): each of the 2N rows is an anchor, its
    positive the other view of its input, its negatives every other row (of every rank with
    ``gather``); the mean over this rank's 2N anchors. ``positive_weight`` (N,) weighs both
    anchors of an input. One call of :func:`info_nce`; SimCLR's loss and
    :class:`~metricssl.losses.DCLLoss` (``decoupled=True``).

    Example:
        >>> import torch
        >>> from metricssl.losses.infonce import two_view_info_nce
        >>> loss = two_view_info_nce(torch.randn(8, 16), torch.randn(8, 16), temperature=0.2)
    """
    if not torch.is_tensor(z1) or not torch.is_tensor(z2) or z1.shape != z2.shape:
        raise ArgumentError(
            "z1 and z2 must be two views of one batch, tensors of the same shape (N, D)"
        )
    n = z1.shape[0]
    ids = torch.arange(n, device=z1.device)
    return info_nce(
        torch.cat([z1, z2]),
        None,
        torch.cat([ids + n, ids]),
        temperature=temperature,
        gather=gather,
        normalize=normalize,
        decoupled=decoupled,
        positive_weight=None if positive_weight is None else positive_weight.repeat(2),
    )


def _check_inputs(queries, keys, positive_index, extra_keys, positive_weight) -> int:
    """Shapes and types of :func:`info_nce`'s tensors; returns the number of queries."""
    if not torch.is_tensor(queries) or not queries.is_floating_point() or queries.ndim != 2:
        raise ArgumentError(
            "queries must be a 2D floating-point tensor (N, D), got "
            + (f"shape {tuple(queries.shape)}" if torch.is_tensor(queries) else repr(queries))
        )
    n, width = queries.shape
    for name, t in (("keys", keys), ("extra_keys", extra_keys)):
        if t is None:
            continue
        if not torch.is_tensor(t) or not t.is_floating_point() or t.ndim != 2:
            raise ArgumentError(f"{name} must be a 2D floating-point tensor (rows, D) or None")
        if t.shape[1] != width:
            raise ArgumentError(
                f"{name} has width {t.shape[1]}, but the queries have width {width}"
            )
    if keys is None and positive_index is None:
        raise ArgumentError("positive_index is required when keys is None (queries as keys)")
    if positive_index is not None:
        if (
            not torch.is_tensor(positive_index)
            or positive_index.is_floating_point()
            or positive_index.dtype == torch.bool
            or positive_index.shape != (n,)
        ):
            raise ArgumentError(
                f"positive_index must be an integer tensor of shape ({n},), one key row per query"
            )
        m = n if keys is None else keys.shape[0]
        # Checked where reading it costs no device synchronisation; on a GPU the callers
        # build it in range (arange), and a wrong one is torch's index error.
        if n and positive_index.device.type == "cpu":
            lo, hi = int(positive_index.min()), int(positive_index.max())
            if lo < 0 or hi >= m:
                raise ArgumentError(
                    f"positive_index has rows in [{lo}, {hi}], outside the {m} keys [0, {m})"
                )
    elif keys.shape[0] != n:
        raise ArgumentError(
            f"keys has {keys.shape[0]} rows and queries {n}: without positive_index, key row i "
            "is query i's positive, so they must have the same number of rows"
        )
    if positive_weight is not None and (
        not torch.is_tensor(positive_weight) or positive_weight.shape != (n,)
    ):
        raise ArgumentError(f"positive_weight must be a tensor of shape ({n},) or None")
    return n


def _prepare(x: torch.Tensor, dtype: torch.dtype, normalize: bool) -> torch.Tensor:
    x = x.to(dtype)
    return F.normalize(x, dim=1) if normalize else x


def _negative_lse(q, keys, extra, positive_col, self_col, temperature, chunk_size):
    """``logsumexp`` over each query's negatives: ``keys`` except its positive (and itself),
    and ``extra``; blocks of queries, recomputed in the backward pass when there are several."""
    width = (0 if keys is None else keys.shape[0]) + (0 if extra is None else extra.shape[0])
    n = q.shape[0]
    step = chunk_size or rows_per_chunk(width * _BYTES_PER_LOGIT, device=q.device)
    if step >= n:
        return _block_negative_lse(q, keys, extra, positive_col, self_col, temperature)
    recompute = torch.is_grad_enabled()
    blocks = []
    for start in range(0, n, step):
        part = slice(start, min(start + step, n))
        args = (
            q[part],
            keys,
            extra,
            positive_col[part],
            None if self_col is None else self_col[part],
            temperature,
        )
        if recompute:
            blocks.append(checkpoint(_block_negative_lse, *args, use_reentrant=False))
        else:
            blocks.append(_block_negative_lse(*args))
    return torch.cat(blocks)


def _block_negative_lse(q, keys, extra, positive_col, self_col, temperature):
    rows = torch.arange(q.shape[0], device=q.device)
    lse = None
    if keys is not None:
        logits = q @ keys.T / temperature
        drop = torch.zeros_like(logits, dtype=torch.bool)
        drop[rows, positive_col] = True
        if self_col is not None:
            drop[rows, self_col] = True
        lse = torch.logsumexp(logits.masked_fill(drop, float("-inf")), dim=1)
    if extra is not None:
        extra_lse = torch.logsumexp(q @ extra.T / temperature, dim=1)
        lse = extra_lse if lse is None else torch.logaddexp(lse, extra_lse)
    if lse is None:  # no negatives at all: exp(-inf) = 0 in the denominator
        lse = q.new_full((q.shape[0],), float("-inf"))
    return lse


__all__ = ["info_nce", "info_nce_terms", "two_view_info_nce"]
