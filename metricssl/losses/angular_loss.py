"""AngularLoss: bound the angle at the negative of the triangle (anchor, positive, negative)."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from ..core import chunking
from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError, check_distance_type, check_number
from ..distances import BaseDistance, LpDistance
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels


class AngularLoss(BaseMetricLossFunction):
    """Angular loss (PML's ``AngularLoss``).

    Wang, Zhou, Wen, Liu and Lin, "Deep Metric Learning with Angular Loss", ICCV 2017. For
    every positive pair (a, p), with ``t = tan(alpha)^2`` and the negatives ``n`` of ``a``
    (every reference with another label)::

        loss(a, p) = log(1 + sum_n exp(4 t (a + p) . x_n - 2 (1 + t) a . p))

    As in PML, ``a`` and ``p`` are L2-normalised but the negatives ``x_n`` are the reference
    embeddings as given (normalise them yourself if you want the paper's form). A miner's
    ``indices_tuple`` picks the positive pairs; the negatives are still every differently
    labelled reference, as in PML, so labels are always required.

    PML forms a (pairs x references x dim) product. Here the sum over negatives factorises:
    ``sum_n exp(4t a.x_n) exp(4t p.x_n)`` is a dot product of two rows of row-shifted
    exponentials (N x M and M x M, computed once). For pairs that share a label (all of
    them from labels or PML's miners) these dots come from small per-block matrix products
    over label-sorted anchors: about N x M x (64 + class size) work and O(N x M) memory.
    Pairs whose shifted sum would underflow (very spread similarities) are evaluated exactly,
    pair by pair, in memory-bounded blocks recomputed during backward. The backward of the
    block products cannot itself be differentiated (no double backward).

    Args:
        alpha: the angle bound in degrees (0 < alpha < 90).
        distance: must be ``LpDistance(p=2, power=1, normalize_embeddings=True)`` (the
            default), as in PML.
        reducer: MeanReducer by default, over positive pairs.
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss;
            ``collect_stats`` records ``average_angle`` (degrees).

    Example:
        >>> import torch
        >>> from metricssl.losses.angular_loss import AngularLoss
        >>> loss_fn = AngularLoss(alpha=40)
        >>> embeddings = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
        >>> loss = loss_fn(embeddings.requires_grad_(), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        alpha: float = 40,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("alpha", alpha, low=0, high=90, low_inclusive=False, high_inclusive=False)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, LpDistance)
        d = self.distance
        if d.p != 2 or d.power != 1 or not d.normalize_embeddings:
            raise ArgumentError(
                "AngularLoss requires LpDistance(p=2, power=1, normalize_embeddings=True), got "
                f"p={d.p}, power={d.power}, normalize_embeddings={d.normalize_embeddings}"
            )
        # PML keeps alpha as a radians tensor.
        self.alpha = torch.tensor(math.radians(alpha), dtype=torch.float64)
        self.average_angle = 0
        self.add_to_recordable_attributes(list_of_names=["alpha"], is_stat=False)
        self.add_to_recordable_attributes(list_of_names=["average_angle"], is_stat=True)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        require_labels(labels, type(self).__name__)
        if ref_labels is None:
            raise ArgumentError("AngularLoss: ref_labels is required when ref_emb is given")
        a1, p, a2, _ = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        acc = c_f.accumulation_dtype(embeddings.dtype)
        query = self.distance.normalize(embeddings.to(acc))
        ref_raw = ref_emb.to(acc)
        ref_norm = query if ref_emb is embeddings else self.distance.normalize(ref_raw)
        # A reference is a negative of an anchor when their labels differ.
        keep = labels.unsqueeze(1) != ref_labels.unsqueeze(0)
        self._set_stats(query, ref_norm, ref_raw, keep, a1, p)

        sq_tan = math.tan(float(self.alpha)) ** 2
        # f(a, p, n) = u[a, n] + v[p, n] + c(a, p): the exponent of every negative term.
        u = 4 * sq_tan * query @ ref_raw.T
        v = u if ref_emb is embeddings else 4 * sq_tan * ref_norm @ ref_raw.T
        u = u.masked_fill(~keep, float("-inf"))
        c = -2 * (1 + sq_tan) * (query[a1] * ref_norm[p]).sum(dim=1)
        losses = _log1p_sum_exp(u, v, c, keep, a1, p, labels, ref_labels)
        return {
            "loss": {
                "losses": losses.unsqueeze(1).to(embeddings.dtype),  # PML's (pairs, 1) shape
                "indices": (a1, p),
                "reduction_type": "pos_pair",
            }
        }

    def _set_stats(self, query, ref_norm, ref_raw, keep, a1, p):
        """PML's ``average_angle``: mean of atan(|a - p| / (2 |c - x_n|)) over negatives."""
        if not self.collect_stats:
            return
        with torch.no_grad():
            total = torch.zeros((), dtype=torch.float64, device=query.device)
            count = keep.sum(dim=1)[a1].sum()
            ref_sq = (ref_raw * ref_raw).sum(dim=1)
            bytes_per_row = ref_raw.shape[0] * 4 * query.element_size()
            for rows in chunking.row_chunks(len(a1), bytes_per_row, device=query.device):
                anchors, positives = query[a1[rows]], ref_norm[p[rows]]
                centers = (anchors + positives) / 2
                ap_dist = torch.nn.functional.pairwise_distance(anchors, positives).unsqueeze(1)
                nc_sq = (
                    (centers * centers).sum(dim=1, keepdim=True) + ref_sq - 2 * centers @ ref_raw.T
                )
                angles = torch.atan(ap_dist / (2 * nc_sq.clamp(min=0).sqrt()))
                total += angles[keep[a1[rows]]].sum().double()
            # A host read (a CUDA sync) only with collect_stats, as in PML.
            self.average_angle = math.degrees((total / count.clamp(min=1)).item())


def _log1p_sum_exp(u, v, c, keep, a1, p, labels, ref_labels):
    """``log(1 + sum_n exp(u[a, n] + v[p, n] + c))`` for every pair (a, p) = (a1[i], p[i]).

    With row shifts, the sum is ``exp(shift_a + shift_p + c) * sum_n eu[a, n] * ev[p, n]``
    where ``eu = exp(u - shift_a)`` and ``ev = exp(v - shift_p)`` are N x M and M x M: a dot
    product per pair, with no exp per (pair, negative). A sum that underflows (terms below
    the dtype's tiny value could then matter) is recomputed exactly, pair by pair.
    """
    u_shift = u.detach().amax(dim=1, keepdim=True)
    u_shift = torch.where(torch.isfinite(u_shift), u_shift, torch.zeros_like(u_shift))
    v_shift = v.detach().amax(dim=1, keepdim=True)
    eu, ev = torch.exp(u - u_shift), torch.exp(v - v_shift)
    # One host read picks the algorithm: a miner's or the labels' pairs share a label and
    # take the per-class products; the read is cheap next to the N x M work either way.
    if bool((labels[a1] == ref_labels[p]).all()):
        sums = _same_label_pair_dots(eu, ev, labels, ref_labels, a1, p)
    else:  # hand-made pairs across labels: the whole N x M product
        sums = (eu @ ev.T)[a1, p]
    info = torch.finfo(sums.dtype)
    reliable = sums > u.shape[1] * info.tiny / info.eps
    safe = torch.where(reliable, sums, torch.ones_like(sums))
    log_sum = torch.log(safe) + u_shift[a1, 0] + v_shift[p, 0] + c
    losses = torch.where(reliable, torch.logaddexp(log_sum, torch.zeros_like(log_sum)), 0)
    # An anchor without negatives has loss 0 (PML); the other unreliable sums are redone.
    redo = torch.nonzero(keep.any(dim=1)[a1] & ~reliable).squeeze(1)
    if len(redo):
        exact = _pairwise_log1p_sum_exp(u, v, c[redo], keep, a1[redo], p[redo])
        losses = losses.index_put((redo,), exact)
    return losses


# Anchors per block of the same-label products; a block's references are the ones whose
# labels fall in the block's label range, so small classes cost about (block + class) x M.
_BLOCK_ROWS = 64


def _same_label_pair_dots(eu, ev, labels, ref_labels, a1, p):
    """``(eu[a1] * ev[p]).sum(1)`` for pairs that share a label, without gathering rows per pair.

    Anchors are sorted by label and cut into blocks; each block multiplies its rows by the
    rows of ``ev`` with labels in the block's range (one small matrix product), and reads its
    pairs from the result. Work is about N x M x (block + class size), memory O(N x M).
    """
    sorted_labels, order = torch.sort(labels, stable=True)
    sorted_ref, ref_order = torch.sort(ref_labels, stable=True)
    rank, ref_rank = torch.empty_like(order), torch.empty_like(ref_order)
    rank[order] = torch.arange(len(order), device=order.device)
    ref_rank[ref_order] = torch.arange(len(ref_order), device=order.device)
    n = len(labels)
    starts = torch.arange(0, n, _BLOCK_ROWS, device=labels.device)
    ends = torch.clamp(starts + _BLOCK_ROWS, max=n)
    col_lo = torch.searchsorted(sorted_ref, sorted_labels[starts])
    col_hi = torch.searchsorted(sorted_ref, sorted_labels[ends - 1], right=True)
    # Pairs grouped by the block of their anchor.
    row = rank[a1]
    block_of_pair = row // _BLOCK_ROWS
    pair_order = torch.argsort(block_of_pair, stable=True)
    counts = torch.bincount(block_of_pair, minlength=len(starts))
    bounds = torch.stack([starts, ends, col_lo, col_hi, counts]).T.tolist()  # one sync
    blocks, offset = [], 0
    for r0, r1, c0, c1, count in bounds:
        sel = pair_order[offset : offset + count]
        offset += count
        if count:
            blocks.append(
                (order[r0:r1], ref_order[c0:c1], row[sel] - r0, ref_rank[p[sel]] - c0, sel)
            )
    return _BlockPairDots.apply(eu, ev, blocks, len(a1))


class _BlockPairDots(torch.autograd.Function):
    """Pair dot products from per-block matrix products, with a blockwise backward.

    Autograd through the blocks would allocate a full-size gradient per block slice; this
    accumulates each block's two gradient products straight into the N x M results.
    """

    @staticmethod
    def forward(ctx, eu, ev, blocks, n_pairs):
        out = eu.new_empty(n_pairs)
        for rows, cols, local_r, local_c, sel in blocks:
            out[sel] = (eu[rows] @ ev[cols].T)[local_r, local_c]
        ctx.save_for_backward(eu, ev)
        ctx.blocks = blocks
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        eu, ev = ctx.saved_tensors
        grad_eu, grad_ev = torch.zeros_like(eu), torch.zeros_like(ev)
        for rows, cols, local_r, local_c, sel in ctx.blocks:
            g = eu.new_zeros(len(rows), len(cols))
            g.index_put_((local_r, local_c), grad_out[sel], accumulate=True)  # repeated pairs
            grad_eu.index_add_(0, rows, g @ ev[cols])
            grad_ev.index_add_(0, cols, g.T @ eu[rows])
        return grad_eu, grad_ev, None, None


def _pairwise_log1p_sum_exp(u, v, c, keep, a1, p):
    """The same sums computed pair by pair, in blocks within the memory budget.

    Each block is checkpointed, so its (pairs x M) intermediates are recomputed in backward
    instead of being held for all blocks at once.
    """

    def block(u, v, c, a, pp):
        x = u[a] + v[pp] + c.unsqueeze(1)
        return lmu.masked_logsumexp(x, keep[a], add_one=True).squeeze(1)

    bytes_per_row = u.shape[1] * (4 * u.element_size() + 1)
    chunks = list(chunking.row_chunks(len(a1), bytes_per_row, device=u.device))
    if len(chunks) == 1:
        return block(u, v, c, a1, p)
    return torch.cat(
        [checkpoint(block, u, v, c[r], a1[r], p[r], use_reentrant=False) for r in chunks]
    )
