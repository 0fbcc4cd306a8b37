"""TripletMarginLoss: anchors should be closer to their positives than to their negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..core import chunking
from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError, check_bool, check_number
from ..reducers import AvgNonZeroReducer, FusedReduction
from .base_metric_loss_function import (
    BaseMetricLossFunction,
    require_labels_or_indices_tuple,
    require_ref_labels,
)


def check_triplets_per_anchor(value) -> None:
    """``"all"`` or a positive int, as PML's ``triplets_per_anchor``."""
    if isinstance(value, str):
        if value != "all":
            raise ArgumentError(
                f'triplets_per_anchor must be "all" or a positive int, got {value!r}'
            )
        return
    check_number("triplets_per_anchor", value, low=1, integer=True)


class TripletMarginLoss(BaseMetricLossFunction):
    """Triplet margin loss: ``relu(d(a, p) - d(a, n) + margin)`` for every triplet.

    The triplet loss of Schroff, Kalenichenko and Philbin, "FaceNet: A Unified Embedding for
    Face Recognition and Clustering", CVPR 2015 (after Weinberger and Saul, "Distance Metric
    Learning for Large Margin Nearest Neighbor Classification", JMLR 2009); ``swap`` is the
    anchor swap of Balntas, Riba, Ponsa and Mikolajczyk, "Learning local feature descriptors
    with triplets and shallow convolutional neural networks", BMVC 2016.

    Same arguments, values and gradients as PML's ``TripletMarginLoss``. Over all triplets
    (the default) with a Mean/Sum/Threshold/AvgNonZero reducer the loss is computed without
    listing triplets: each anchor's positives are sorted by ``d(a, p) + margin`` and every
    negative finds, by binary search, the positives whose margin it violates. That is
    O(N^2 log N) time and O(N^2) memory instead of PML's O(N^3). With ``swap`` or
    ``smooth_loss`` every triplet is evaluated, in memory-bounded blocks. Other reducers, a
    miner's ``indices_tuple`` or an int ``triplets_per_anchor`` get PML's per-triplet losses.

    The blockwise path's backward cannot itself be differentiated (no double backward).

    Deviation from PML: with ``swap=True`` and a separate ``ref_emb``, PML reads the
    positive-negative distance from row ``p`` of the query-by-reference matrix (the distance
    between query ``p`` and reference ``n``). Here it is the distance between reference
    embeddings ``p`` and ``n``, which is what the swap means. Without ``ref_emb`` both agree.

    Args:
        margin: the required gap between the anchor-negative and anchor-positive distances.
        swap: use the positive-negative distance when it violates the margin more.
        smooth_loss: ``softplus`` instead of ``relu`` of the violation.
        triplets_per_anchor: ``"all"``, or that many random triplets per anchor.
        distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in
            :class:`~metricssl.losses.BaseMetricLossFunction` (AvgNonZeroReducer by default).

    Example:
        >>> import torch
        >>> from metricssl.losses.triplet_margin_loss import TripletMarginLoss
        >>> loss_fn = TripletMarginLoss(margin=0.1)
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> labels = torch.randint(0, 4, (32,))
        >>> loss_fn(embeddings, labels).backward()
    """

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: int | str = "all",
        distance=None,
        reducer=None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("margin", margin)
        check_bool("swap", swap)
        check_bool("smooth_loss", smooth_loss)
        check_triplets_per_anchor(triplets_per_anchor)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.margin = margin
        self.swap = swap
        self.smooth_loss = smooth_loss
        self.triplets_per_anchor = triplets_per_anchor
        self.add_to_recordable_attributes(list_of_names=["margin"], is_stat=False)

    def get_default_reducer(self):
        return AvgNonZeroReducer()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        fused = self.fused_reduction("loss")
        if indices_tuple is None and self.triplets_per_anchor == "all" and fused is not None:
            if self.swap or self.smooth_loss:
                entry = self._all_triplets_by_pairs(fused, embeddings, labels, ref_emb, ref_labels)
            else:
                entry = self._all_triplets_sorted(fused, embeddings, labels, ref_emb, ref_labels)
            return {"loss": entry}
        return self._listed_triplets(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    # -- shared pieces -----------------------------------------------------------------------

    def _oriented(self, query, ref):
        """The distance matrix with "smaller = closer", in a dtype fit for accumulation."""
        mat = self.distance(query, ref)
        mat = mat.to(c_f.accumulation_dtype(mat.dtype))
        return -mat if self.distance.is_inverted else mat

    def _violation_to_loss(self, violation):
        return F.softplus(violation) if self.smooth_loss else F.relu(violation)

    # -- all triplets, relu, no swap: sort + binary search --------------------------------------

    def _all_triplets_sorted(self, fused: FusedReduction, embeddings, labels, ref_emb, ref_labels):
        """Sum and count of the kept triplet losses in O(N^2 log N), with no triplet list.

        For anchor a and positive p let x_p = d(a, p) + margin. A triplet's loss is
        ``max(x_p - d(a, n), 0)``; the reducer keeps it when ``low < loss < high``. The
        non-zero kept losses are those with ``d(a, n) + L < x_p < d(a, n) + high`` (L = low
        clipped at 0): after sorting the anchor's x values, each negative's positives form a
        run of that order, found by binary search. The loss summed over the kept triplets is
        linear in the distances,

            total = sum_p cnt_p * (d(a, p) + margin) - sum_n w_n * d(a, n),

        where w_n is the length of n's run and cnt_p the number of runs holding p. These
        integer coefficients are found without autograd; one differentiable product then
        gives PML's value and gradients, and only an N x M matrix is kept for backward.
        """
        dist = self._oriented(embeddings, ref_emb)
        n, m = dist.shape
        # Float32 embeddings sum in float64 (there can be billions of triplets).
        acc = torch.float64 if dist.dtype in (torch.float32, torch.float64) else torch.float32
        low, high = fused.low, fused.high
        shift = 0.0 if low is None or low <= 0 else float(low)
        # Zero losses (x_p <= d(a, n)) are kept only when the bounds admit 0 (MeanReducer).
        keep_zeros = (low is None or low < 0) and (high is None or high > 0)
        coef = torch.zeros_like(dist)
        n_nonzero = torch.zeros((), dtype=torch.int64, device=dist.device)
        n_zero = torch.zeros((), dtype=torch.int64, device=dist.device)
        with torch.no_grad():
            d_all = dist.detach()
            for rows in chunking.row_chunks(
                n, m * (3 * dist.element_size() + 24), device=dist.device
            ):
                pos, neg = pos_neg_masks(labels, ref_labels, rows=rows)
                n_pos = pos.sum(dim=1, keepdim=True)
                k = int(n_pos.max())
                if k == 0:
                    continue
                d, coef_rows = d_all[rows], coef[rows]
                # Each anchor's positives, padded to k with +inf, sorted by x.
                p_cols = torch.topk(pos.view(torch.uint8), k, dim=1).indices
                x = d.gather(1, p_cols) + self.margin
                x, order = torch.sort(x.masked_fill_(~pos.gather(1, p_cols), float("inf")), dim=1)
                p_cols = p_cols.gather(1, order)
                # Negative n is in the windows of the sorted positives start_n <= j < end_n.
                start = torch.searchsorted(x, d + shift if shift else d, right=True)
                not_neg, dump = ~neg, k + 1
                # The coefficient of a negative is minus its number of windows.
                if high is None:
                    torch.sub(start, n_pos, out=coef_rows)
                else:
                    end = torch.searchsorted(x, d + high)
                    torch.maximum(end, start, out=end)
                    torch.sub(start, end, out=coef_rows)
                coef_rows.masked_fill_(not_neg, 0)
                # cnt_j = windows holding slot j: +1 where a window starts, -1 where it ends.
                ones = torch.ones((), dtype=start.dtype, device=start.device).expand_as(start)
                step = torch.zeros(d.shape[0], k + 2, dtype=start.dtype, device=d.device)
                step.scatter_add_(1, start.masked_fill_(not_neg, dump), ones)
                n_below = step[:, : k + 1]  # negatives by their start slot
                if keep_zeros:
                    # With shift 0, start_n positives have loss 0 with n.
                    slot = torch.arange(k + 1, device=d.device)
                    n_zero += (n_below * slot).sum()
                if high is not None:
                    step.scatter_add_(1, end.masked_fill_(not_neg, dump), -ones)
                cnt = step[:, :k].cumsum(dim=1)
                if high is None:
                    # Windows end at n_pos, past the last real positive: clear the padding.
                    cnt.masked_fill_(torch.arange(k, device=d.device) >= n_pos, 0)
                # Padding slots now have cnt 0, so adding them to any column is a no-op.
                coef_rows.scatter_add_(1, p_cols, cnt.to(coef.dtype))
                n_nonzero += cnt.sum()
        total = torch.sum(coef * dist, dtype=acc) + self.margin * n_nonzero.to(acc)
        return fused.loss_entry(total, n_nonzero + n_zero, embeddings)

    # -- all triplets with swap or softplus: chunks of positive pairs ---------------------------

    def _all_triplets_by_pairs(
        self, fused: FusedReduction, embeddings, labels, ref_emb, ref_labels
    ):
        """Every triplet's loss, for blocks of (anchor, positive) pairs times all negatives.

        Each block is a (pairs x M) tensor sized by the memory budget; backward recomputes
        one block at a time (see :class:`_BlockwiseTripletSum`), so no N x N x N worth of
        intermediates is ever held.
        """
        dist = self._oriented(embeddings, ref_emb)
        # The swap compares positive and negative, both reference embeddings.
        dist_pn = None
        if self.swap:
            dist_pn = dist if ref_emb is embeddings else self._oriented(ref_emb, ref_emb)
        pos, neg = pos_neg_masks(labels, ref_labels)
        anchors, positives = torch.where(pos)
        bytes_per_pair = dist.shape[1] * (6 * dist.element_size() + 4)
        blocks = [
            (anchors[rows], positives[rows])
            for rows in chunking.row_chunks(len(anchors), bytes_per_pair, device=dist.device)
        ]

        def block_loss(d_ap, d_an, d_pn, a):
            if d_pn is not None:
                d_an = torch.minimum(d_an, d_pn)
            losses = self._violation_to_loss(d_ap.unsqueeze(1) - d_an + self.margin)
            return fused.partial(losses, neg[a])

        total, count = _BlockwiseTripletSum.apply(dist, dist_pn, block_loss, blocks)
        return fused.loss_entry(total, count, embeddings)

    # -- listed triplets (miner output, random triplets, or an element-wise reducer) ---------------

    def _listed_triplets(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        triplets = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor
        )
        a, p, n = triplets
        if len(a) == 0:
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        d_ap, d_an = mat[a, p], mat[a, n]
        if self.swap:
            mat_pn = mat if ref_emb is embeddings else self.distance(ref_emb, ref_emb)
            d_an = self.distance.smallest_dist(d_an, mat_pn[p, n])
        violation = self.distance.margin(d_ap, d_an) + self.margin
        return {
            "loss": {
                "losses": self._violation_to_loss(violation),
                "indices": triplets,
                "reduction_type": "triplet",
            }
        }


class _BlockwiseTripletSum(torch.autograd.Function):
    """``sum_blocks block_loss(d(a, p), d(a, :), d_pn(p, :), a)`` with blockwise backward.

    Autograd would keep every block's (pairs x M) intermediates until backward, N x N x N
    in all. This keeps only the inputs and recomputes each block during backward, adding
    its gradient into the N x M gradient rows it touches.
    """

    @staticmethod
    def forward(ctx, dist, dist_pn, block_loss, blocks):
        acc = torch.float64 if dist.dtype in (torch.float32, torch.float64) else torch.float32
        total = torch.zeros((), dtype=acc, device=dist.device)
        count = torch.zeros((), dtype=torch.int64, device=dist.device)
        for a, p in blocks:
            d_pn = None if dist_pn is None else dist_pn[p]
            part_sum, part_count = block_loss(dist[a, p], dist[a], d_pn, a)
            total += part_sum.to(acc)
            count += part_count
        ctx.save_for_backward(dist, dist_pn)
        ctx.block_loss, ctx.blocks = block_loss, blocks
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_count):
        dist, dist_pn = ctx.saved_tensors
        dist = dist.detach()
        dist_pn = None if dist_pn is None else dist_pn.detach()
        grad = torch.zeros_like(dist)
        grad_pn = None if dist_pn is None else torch.zeros_like(dist_pn)
        for a, p in ctx.blocks:
            d_ap, d_an = dist[a, p].requires_grad_(), dist[a].requires_grad_()
            d_pn = None if dist_pn is None else dist_pn[p].requires_grad_()
            leaves = [x for x in (d_ap, d_an, d_pn) if x is not None]
            with torch.enable_grad():
                part_sum, _ = ctx.block_loss(d_ap, d_an, d_pn, a)
            grads = torch.autograd.grad(part_sum, leaves, grad_total.to(part_sum.dtype))
            grad.index_put_((a, p), grads[0], accumulate=True)
            grad.index_add_(0, a, grads[1])
            if dist_pn is not None:
                grad_pn.index_add_(0, p, grads[2])
        return grad, grad_pn, None, None
