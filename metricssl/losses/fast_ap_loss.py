"""FastAPLoss: average precision from soft histograms of each query's distances."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError, check_distance_type, check_number
from ..distances import BaseDistance, LpDistance
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels
from .rank_utils import reject_ref_emb


class FastAPLoss(BaseMetricLossFunction):
    """FastAP: average precision approximated with distance histograms (triangular bins).

    Cakir, He, Xia, Kulis and Sclaroff, "Deep Metric Learning to Rank", CVPR 2019. Each
    query's squared Euclidean distances to the batch (between L2-normalised embeddings, so
    within ``[0, 2**power]``) are spread over ``num_bins + 1`` evenly spaced bin centres by
    a triangular kernel, separately for positives (``h+``) and for all items (``h``). With
    ``H+`` and ``H`` their cumulative sums::

        FastAP = 1/|P| sum_bins h+ * H+ / H        loss = 1 - FastAP

    per query with at least one positive (times its miner weight when an ``indices_tuple``
    is given), averaged by the reducer. Labels are required; ``ref_emb`` is not supported.

    Compatibility: same values and gradients as PML 2.9. PML evaluates every bin for every
    pair, a (bins x N x N) tensor; a distance only falls in two adjacent bins, so here each
    pair is scattered into those two, O(N^2) in time and memory whatever ``num_bins`` is.
    Half-precision inputs are computed in float32 and returned in the input dtype.

    Args:
        num_bins: the number of histogram bins (>= 1).
        distance: an LpDistance with ``p=2`` and ``normalize_embeddings=True``; the default
            is ``LpDistance(power=2)`` (squared distances).
        reducer: MeanReducer by default (over queries with a positive).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.fast_ap_loss import FastAPLoss
        >>> loss_fn = FastAPLoss(num_bins=10)
        >>> embeddings = torch.randn(16, 32, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (16,))).backward()
    """

    def __init__(
        self,
        num_bins: int = 10,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("num_bins", num_bins, low=1, integer=True)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, LpDistance)
        if not self.distance.normalize_embeddings or self.distance.p != 2:
            raise ArgumentError(
                "FastAPLoss requires distance to be an LpDistance with p=2 and "
                f"normalize_embeddings=True, got p={self.distance.p}, "
                f"normalize_embeddings={self.distance.normalize_embeddings}"
            )
        self.num_bins = int(num_bins)
        self.num_edges = self.num_bins + 1
        self.add_to_recordable_attributes(list_of_names=["num_bins"], is_stat=False)

    def get_default_distance(self):
        return LpDistance(power=2)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels(labels, name)
        reject_ref_emb(embeddings, labels, ref_emb, ref_labels, name)
        pos, neg = pos_neg_masks(labels)
        n_pos = pos.sum(dim=1)
        has_pos = n_pos > 0
        # No positive anywhere leaves no bin usable below: that one host read (a CUDA sync)
        # also answers PML's zero-loss case.
        acc = c_f.accumulation_dtype(embeddings.dtype)
        dist = self.distance(embeddings.to(acc))
        pos_hist, neg_hist = self._histograms(dist, pos, neg)

        cum_pos = torch.cumsum(pos_hist, dim=1)
        cum_all = torch.cumsum(pos_hist + neg_hist, dim=1)
        prod = pos_hist * cum_pos
        usable = (prod > 0) & (cum_all > 0)
        if not bool(usable.any()):
            return self.zero_losses()
        ratio = torch.where(usable, prod / torch.where(usable, cum_all, 1), 0)
        fast_ap = ratio.sum(dim=1)[has_pos] / n_pos[has_pos]
        weights = lmu.convert_to_weights(indices_tuple, labels, dtype=acc)
        losses = (1 - fast_ap) * weights[has_pos]
        return {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": torch.where(has_pos)[0],
                "reduction_type": "element",
            }
        }

    def _histograms(self, dist, pos, neg):
        """Per-query soft histograms (N, num_edges) of the positive and negative distances.

        A distance ``d`` has weight ``relu(1 - |d - c_b| / delta)`` in the bin of centre
        ``c_b``: non-zero only for the two centres around ``d``, found by ``floor(d / delta)``.
        """
        hist_max = 2**self.distance.power
        delta = hist_max / self.num_bins
        centres = torch.linspace(
            0.0, hist_max, steps=self.num_edges, device=dist.device, dtype=dist.dtype
        )
        lower = torch.floor(dist.detach() / delta).long().clamp_(0, self.num_bins)
        upper = (lower + 1).clamp_(max=self.num_bins)
        w_lower = torch.relu(1 - torch.abs(dist - centres[lower]) / delta)
        # Past the last centre there is no upper bin.
        w_upper = torch.relu(1 - torch.abs(dist - centres[upper]) / delta) * (upper > lower)
        hists = []
        for mask in (pos, neg):
            hist = torch.zeros(dist.shape[0], self.num_edges, dtype=dist.dtype, device=dist.device)
            hist = hist.scatter_add(1, lower, torch.where(mask, w_lower, 0))
            hists.append(hist.scatter_add(1, upper, torch.where(mask, w_upper, 0)))
        return hists
