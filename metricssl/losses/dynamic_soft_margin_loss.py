"""DynamicSoftMarginLoss: triplet differences weighted by their running CDF."""

from __future__ import annotations

import torch

from ..core import chunking
from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError, check_distance_type, check_number
from ..distances import BaseDistance, LpDistance
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction


def find_hard_negatives(dmat: torch.Tensor):
    """PML's helper: (diagonal, hardest off-diagonal entry of each row/column pair).

    For a square anchor-by-positive distance matrix, ``pos[i] = dmat[i, i]`` and ``neg[i]``
    is the smallest entry of row ``i`` or column ``i`` off the diagonal. Unlike PML's, it
    leaves ``dmat`` unchanged.
    """
    pos = dmat.diagonal()
    off = dmat.masked_fill(torch.eye(*dmat.shape, dtype=torch.bool, device=dmat.device), torch.inf)
    return pos, torch.minimum(off.min(dim=0).values, off.min(dim=1).values)


class DynamicSoftMarginLoss(BaseMetricLossFunction):
    """Dynamic soft margin loss (PML's ``DynamicSoftMarginLoss``).

    Zhang and Rusinkiewicz, "Learning Local Descriptors with a CDF-Based Dynamic Soft
    Margin", ICCV 2019. For every triplet, ``x = d(a, p) - d(a, n)``; a running histogram of
    ``x`` over ``[min_val, -min_val]`` (``num_bins`` bins, linear interpolation between
    neighbouring bins, updated with ``momentum``) gives a CDF, and the loss is the mean of
    ``CDF(x) * x``. With labels every (anchor, positive, negative) triplet is used, or a
    miner's ``indices_tuple``; without labels, ``embeddings`` and ``ref_emb`` are row-aligned
    (anchor, positive) pairs and each pair's negative is the hardest one in its row or
    column (as in HardNet).

    Same values and gradients as PML's first call, including the gradient that flows through
    this batch's histogram update. Differences:

    - the stored histogram ``hist_`` is detached after each call. PML keeps the autograd
      graph in it, so a second ``backward`` in a training loop raises an error there;
    - PML indexes out of range (an error) when ``x`` reaches the top bin,
      ``x >= -min_val - bin_width`` (or falls below ``min_val``); here such values are
      clamped to the end bins;
    - with labels, PML lists every triplet (O(N^3) memory). Here anchors are processed in
      blocks within the memory budget and the gradient is accumulated as per-pair
      coefficients: O(N^2) memory.

    Args:
        min_val: the lower end of the histogram's range (< 0); it spans ``[min_val, -min_val]``.
        num_bins: the number of bins (a positive int).
        momentum: the weight of the current batch's histogram, in [0, 1] (the first batch
            always gets weight 1).
        distance: an LpDistance with ``p=2`` and ``normalize_embeddings=True`` (the default).
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss
            (the loss is already reduced to its mean; the reducer passes it through).

    Example:
        >>> import torch
        >>> from metricssl.losses.dynamic_soft_margin_loss import DynamicSoftMarginLoss
        >>> loss_fn = DynamicSoftMarginLoss()
        >>> anchors, positives = torch.randn(32, 16), torch.randn(32, 16)
        >>> loss = loss_fn(anchors, ref_emb=positives)  # descriptor pairs, no labels
        >>> loss = loss_fn(torch.randn(32, 16), torch.randint(0, 4, (32,)))
    """

    def __init__(
        self,
        min_val: float = -2.0,
        num_bins: int = 10,
        momentum: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("min_val", min_val, high=0, high_inclusive=False)
        check_number("num_bins", num_bins, low=1, integer=True)
        check_number("momentum", momentum, low=0, high=1)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, LpDistance)
        if self.distance.p != 2 or not self.distance.normalize_embeddings:
            raise ArgumentError(
                "DynamicSoftMarginLoss requires LpDistance(p=2, normalize_embeddings=True), "
                f"got p={self.distance.p}, normalize_embeddings={self.distance.normalize_embeddings}"
            )
        self.min_val = min_val
        self.num_bins = int(num_bins)
        self.delta = 2 * abs(min_val) / num_bins
        self.momentum = momentum
        self.hist_ = torch.zeros((self.num_bins,))
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        acc = c_f.accumulation_dtype(embeddings.dtype)
        self.hist_ = self.hist_.to(device=embeddings.device, dtype=acc)
        if labels is None:
            if embeddings.shape[0] == ref_emb.shape[0] == 1:
                return self.zero_losses()  # one pair and no negative for it
            dist = self.distance(embeddings, ref_emb).to(acc)
            return self._listed(self._hardest_in_row_or_column(dist), embeddings)
        if ref_labels is None:
            raise ArgumentError(
                "DynamicSoftMarginLoss: ref_labels is required when ref_emb is given"
            )
        if indices_tuple is not None:
            a, p, n = lmu.convert_to_triplets(indices_tuple, labels, ref_labels)
            if len(a) == 0:
                return self.zero_losses()
            dist = self.distance(embeddings, ref_emb).to(acc)
            return self._listed(dist[a, p] - dist[a, n], embeddings)
        return self._all_triplets(embeddings, labels, ref_emb, ref_labels)

    # -- the histogram ---------------------------------------------------------------------

    def _bins(self, x):
        """Bin index and interpolation weight of each ``x``, clamped to the histogram's range.

        PML's bin is ``floor((x - min_val) / delta)``; values past the last bin's lower edge
        (where PML indexes out of range) are clamped there, with weight 0 on the next bin.
        """
        u = ((x - self.min_val) / self.delta).clamp(0, self.num_bins - 1)
        idx = torch.nan_to_num(u.detach(), nan=0.0).floor()  # NaN input: NaN loss, no crash
        return idx.long(), u - idx

    def _momentum(self) -> float:
        # A host read per call: the histogram's state after a NaN batch is known only on the
        # device, and this loss reads sizes (k below) from the device anyway.
        return self.momentum if bool(self.hist_.sum() != 0) else 1.0

    def _updated_histogram(self, lower, upper, momentum):
        """Normalised ``(1 - m) * old + m * new``; ``lower[b]`` is the mass put in bin b by
        values whose bin is b, ``upper[b]`` the mass they put in bin b + 1."""
        raw = (1 - momentum) * self.hist_ + momentum * lower
        raw = raw + momentum * torch.cat([raw.new_zeros(1), upper[:-1]])
        return raw / raw.sum()

    def _store(self, hist):
        """Keep the new histogram (detached); a non-finite one (NaN input) keeps the old."""
        hist = hist.detach()
        self.hist_ = torch.where(torch.isfinite(hist).all(), hist, self.hist_)

    # -- a listed set of differences (no labels, or a miner's triplets): plain autograd ------

    def _hardest_in_row_or_column(self, dist):
        """PML's label-free pairs: x_i = d(a_i, p_i) - hardest negative of row or column i.

        A rectangular matrix is padded with zeros to its longer side, as in PML.
        """
        r, c = dist.shape
        size = max(r, c)
        d_pos = dist.new_zeros(size)
        d_pos[: min(r, c)] = dist.diagonal()
        off = dist.masked_fill(torch.eye(r, c, dtype=torch.bool, device=dist.device), torch.inf)
        min_a, min_p = dist.new_zeros(size), dist.new_zeros(size)
        min_a[:c] = off.min(dim=0).values
        min_p[:r] = off.min(dim=1).values
        return d_pos - torch.min(min_a, min_p)

    def _listed(self, x, embeddings):
        momentum = self._momentum()
        idx, alpha = self._bins(x)
        lower = torch.zeros_like(self.hist_).scatter_add(0, idx, 1 - alpha)
        upper = torch.zeros_like(self.hist_).scatter_add(0, idx, alpha)
        hist = self._updated_histogram(lower, upper, momentum)
        loss = (torch.cumsum(hist, 0)[idx] * x).mean()
        self._store(hist)
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }

    # -- every triplet from labels: counted by binary search, never listed -------------------

    def _all_triplets(self, embeddings, labels, ref_emb, ref_labels):
        """Mean of ``CDF(x) * x`` over every triplet, in O(N^2 log N) without listing them.

        For anchor a and positive p, the triplet (a, p, n) has ``u = (x - min_val) / delta >= b``
        exactly when ``d(a, n) <= t_b = d(a, p) - min_val - b * delta``. Each anchor's
        thresholds ``t`` (positives x bins of them) are sorted, and each negative finds by
        binary search how many thresholds lie below it; cumulative counts then give, for
        every (a, p, b), how many triplets fall in each bin and the sum of their ``x``: enough
        for the histogram update and for the loss, which is linear in ``x`` within a bin.

        The gradient is carried by ``sum(coef * dist)``: per triplet the derivative of the
        mean is ``CDF[b] - [x not clamped] * momentum * G[b] / (Z * delta)`` (``G[b]`` the sum
        of ``x`` in bin b, ``Z`` the histogram's normaliser; the second term is the gradient
        through the histogram update, which PML's autograd also follows). ``coef[a, p]`` sums
        it over the negatives, from the same counts; ``-coef[a, n]`` sums it over the
        positives: a step function of ``d(a, n)`` with a step at each threshold, read at the
        negative's position among the sorted thresholds.
        """
        dist = self.distance(embeddings, ref_emb)
        dist = dist.to(c_f.accumulation_dtype(dist.dtype))
        pos, neg = pos_neg_masks(labels, ref_labels)
        if pos.numel() == 0:  # an empty batch: PML's zero loss
            return self.zero_losses()
        k = int(pos.sum(dim=1).max())  # a shape: it must come to the host
        if k == 0 or not bool(neg.any()):
            return self.zero_losses()
        nb, device = self.num_bins, dist.device
        # Float64: differences of float32 distances are then exact, and sums over billions
        # of triplets stay accurate.
        d = dist.detach().double()
        p_cols = torch.topk(pos.view(torch.uint8), k, dim=1).indices  # padded positives
        p_valid = pos.gather(1, p_cols)
        d_ap = d.gather(1, p_cols)
        # Ranges of u: 0 is u < 0 (bin 0, clamped), b + 1 is [b, b + 1) (bin b), nb is
        # u >= nb - 1 (bin nb - 1, clamped).
        range_bin = torch.cat([torch.zeros(1), torch.arange(nb)]).long().to(device)
        inside = torch.ones(nb + 1, dtype=torch.bool, device=device)
        inside[0] = inside[-1] = False
        edges = self.min_val + self.delta * torch.arange(nb, dtype=torch.float64, device=device)
        bytes_per_row = k * nb * 100 + d.shape[1] * 40
        blocks = list(chunking.row_chunks(d.shape[0], bytes_per_row, device=d.device))

        def counts(rows):
            """Per (anchor, positive, range): the number of negatives and the sum of their x;
            plus the sorted thresholds' order and each negative's place among them."""
            t = d_ap[rows].unsqueeze(2) - edges  # (rows, k, nb), decreasing in b
            t = t.masked_fill(~p_valid[rows].unsqueeze(2), torch.inf).flatten(1)
            t_sorted, order = t.sort(dim=1)
            d_rows, is_neg = d[rows], neg[rows]
            place = torch.searchsorted(t_sorted, d_rows)  # thresholds below each distance
            width = t.shape[1] + 1
            n_at = d_rows.new_zeros(len(d_rows), width).scatter_add_(1, place, is_neg.double())
            s_at = d_rows.new_zeros(len(d_rows), width).scatter_add_(
                1, place, torch.where(is_neg, d_rows, 0)
            )
            # Negatives with d(a, n) <= t: those placed at or before t's sorted position.
            below = torch.empty_like(t).scatter_(1, order, n_at.cumsum(dim=1)[:, :-1])
            below_sum = torch.empty_like(t).scatter_(1, order, s_at.cumsum(dim=1)[:, :-1])
            below, below_sum = below.view(-1, k, nb), below_sum.view(-1, k, nb)
            n_neg = is_neg.sum(dim=1).view(-1, 1, 1)
            total = s_at.sum(dim=1).view(-1, 1, 1)
            cnt = torch.cat(
                [n_neg - below[..., :1], below[..., :-1] - below[..., 1:], below[..., -1:]], 2
            )
            neg_sum = torch.cat(
                [
                    total - below_sum[..., :1],
                    below_sum[..., :-1] - below_sum[..., 1:],
                    below_sum[..., -1:],
                ],
                2,
            )
            valid = p_valid[rows].unsqueeze(2)
            cnt = cnt * valid
            x_sum = (cnt * d_ap[rows].unsqueeze(2) - neg_sum) * valid
            return cnt, x_sum, order, place

        with torch.no_grad():
            range_cnt = d.new_zeros(nb + 1)
            range_x = d.new_zeros(nb + 1)
            for rows in blocks:
                cnt, x_sum, _, _ = counts(rows)
                range_cnt += cnt.sum(dim=(0, 1))
                range_x += x_sum.sum(dim=(0, 1))
            count = range_cnt.sum()
            if count.item() == 0:
                return self.zero_losses()
            # The histogram: per range, the summed (1 - alpha) and alpha of its triplets.
            u_sum = (range_x - range_cnt * self.min_val) / self.delta
            alpha = torch.where(inside, u_sum - range_cnt * range_bin.double(), 0)
            lower = d.new_zeros(nb).index_add_(0, range_bin, range_cnt - alpha)
            upper = d.new_zeros(nb).index_add_(0, range_bin, alpha)
            momentum = self._momentum()
            hist = self._updated_histogram(
                lower.to(self.hist_.dtype), upper.to(self.hist_.dtype), momentum
            )
            z = (1 - momentum) * self.hist_.double().sum() + momentum * count
            cdf = torch.cumsum(hist, 0).double()
            x_in_bin = d.new_zeros(nb).index_add_(0, range_bin, range_x)
            g_factor = momentum * x_in_bin / (z * self.delta)
            value_weight = cdf[range_bin]
            grad_weight = value_weight - inside * g_factor[range_bin]
            value = (value_weight * range_x).sum()

            coef = torch.zeros_like(d)
            coef_ap = torch.zeros_like(d_ap)
            # Passing t_b upwards moves a triplet from range b + 1 to range b.
            step = (grad_weight[:-1] - grad_weight[1:]).repeat(k)
            for rows in blocks:
                cnt, _, order, place = counts(rows)
                coef_ap[rows] = (cnt * grad_weight).sum(dim=2)
                rises = step.expand(len(order), -1).gather(1, order)
                rises = torch.cat([rises.new_zeros(len(order), 1), rises.cumsum(dim=1)], 1)
                base = p_valid[rows].sum(dim=1, keepdim=True) * grad_weight[-1]
                coef[rows] = torch.where(neg[rows], -(base + rises.gather(1, place)), 0)
            coef.scatter_add_(1, p_cols, coef_ap * p_valid)
        self._store(hist)
        # The value is exact; the product adds the gradient (its own value cancels out).
        product = torch.sum(coef.to(dist.dtype) * dist)
        loss = (value + (product - product.detach())) / count
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }
