"""HistogramLoss: overlap between the histograms of positive and negative similarities."""

from __future__ import annotations

import math

import torch

from ..core import common as c_f
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels_or_indices_tuple
from .rank_utils import reject_ref_emb

# How far outside [-1, 1] a similarity may stray (rounding) before it is an error.
_RANGE_TOLERANCE = 1e-3


def filter_pairs(*tensors: torch.Tensor) -> list[list]:
    """PML's ``filter_pairs``: the distinct unordered tuples among the columns of
    ``tensors`` (each tuple sorted, duplicates dropped), as a list of rows.

    Example::

        >>> filter_pairs(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 2]))
        [[0, 2], [1, 2]]
    """
    columns = torch.stack(tensors).sort(dim=0).values
    return torch.unique(columns, dim=1).tolist()


class HistogramLoss(BaseMetricLossFunction):
    """Histogram loss: the probability that a negative pair is more similar than a positive.

    Ustinova and Lempitsky, "Learning Deep Embeddings with Histogram Loss", NeurIPS 2016.
    The similarities of the positive pairs and of the negative pairs are each spread over
    nodes ``-1, -1 + delta, ..., 1`` by linear interpolation into histograms ``p+`` and
    ``p-``; the loss is ``sum_r p-[r] * cumsum(p+)[r]``. A pair is unordered and counted
    once; positive pairs count when their anchor has a negative, negative pairs when one of
    their members has a positive (the pairs of PML's triplets). With an ``indices_tuple``
    (triplets, or pairs combined into triplets) the pairs come from its triplets.

    Compatibility: same arguments, values and gradients as PML 2.9. PML lists every
    triplet, O(N^3); here the pairs come from the label masks, O(N^2). Where PML crashes
    (an index error when a similarity reaches 1, e.g. two identical embeddings), the edge
    nodes are used instead; a similarity further than 1e-3 outside [-1, 1] (a distance that
    is not a cosine similarity) raises a ValueError. Labels or an ``indices_tuple`` are
    required; ``ref_emb`` is not supported. Half-precision inputs are computed in float32.

    Args:
        n_bins: the number of bins (``delta = 2 / n_bins``); 100 when neither is given.
        delta: the bin width; must equal ``2 / n_bins`` when both are given.
        distance: CosineSimilarity by default.
        reducer: the loss reaches it already reduced (as in PML).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.histogram_loss import HistogramLoss
        >>> loss_fn = HistogramLoss(n_bins=50)
        >>> embeddings = torch.randn(16, 32, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (16,))).backward()
    """

    def __init__(
        self,
        n_bins: int | None = None,
        delta: float | None = None,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("n_bins", n_bins, low=1, integer=True, allow_none=True)
        check_number("delta", delta, low=0, high=2, low_inclusive=False, allow_none=True)
        if n_bins is not None and delta is not None and not math.isclose(delta, 2 / n_bins):
            raise ArgumentError(
                f"delta and n_bins must satisfy delta = 2 / n_bins, got delta={delta} and "
                f"n_bins={n_bins}"
            )
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        if delta is None:
            delta = 2 / (100 if n_bins is None else n_bins)
        self.delta = delta
        self.add_to_recordable_attributes(name="delta", is_stat=False)

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        reject_ref_emb(embeddings, labels, ref_emb, ref_labels, name)
        if indices_tuple is None:
            pairs = _pairs_from_labels(labels)
        else:
            pairs = _pairs_from_tuple(indices_tuple)
        if pairs is None:
            return self.zero_losses()
        (pos_rows, pos_cols), (neg_rows, neg_cols) = pairs
        acc = c_f.accumulation_dtype(embeddings.dtype)
        mat = self.distance(embeddings.to(acc))
        pos_sims, neg_sims = mat[pos_rows, pos_cols], mat[neg_rows, neg_cols]
        self._check_range(torch.cat([pos_sims.detach(), neg_sims.detach()]))
        p_pos = self._density(pos_sims)
        p_neg = self._density(neg_sims)
        loss = torch.sum(p_neg * torch.cumsum(p_pos, dim=0))
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        }

    def _check_range(self, sims):
        low, high = torch.aminmax(sims)
        low, high = float(low), float(high)
        if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ArgumentError(
                f"HistogramLoss needs similarities in [-1, 1] (a CosineSimilarity distance), "
                f"got values in [{low:.4g}, {high:.4g}] from {type(self.distance).__name__}"
            )

    def _density(self, sims):
        """The pairs' histogram over the nodes, by linear interpolation, summing to 1."""
        n_nodes = round(1 + 2 / self.delta)
        # PML finds the bin in float32 whatever the dtype, and scales the bin index by delta
        # in the default dtype; doing the same keeps float64 results identical.
        bins = torch.floor((sims.float() + 1) / self.delta).long()
        # A similarity of exactly 1 (or a rounding step past an end) uses the edge bin.
        bins = bins.clamp_(0, n_nodes - 2)
        to_upper = c_f.to_dtype((sims + 1 - bins * self.delta) / self.delta, tensor=sims)
        to_lower = c_f.to_dtype(((bins + 1) * self.delta - 1 - sims) / self.delta, tensor=sims)
        density = torch.zeros(n_nodes, dtype=sims.dtype, device=sims.device)
        density = density.scatter_add(0, bins + 1, to_upper).scatter_add(0, bins, to_lower)
        return density / sims.shape[0]


def _unique_unordered(rows: torch.Tensor, cols: torch.Tensor):
    """Each unordered pair once, as (smaller, larger) index columns in lexicographic order."""
    pairs = torch.sort(torch.stack([rows, cols]), dim=0).values
    pairs = torch.unique(pairs, dim=1)
    return pairs[0], pairs[1]


def _pairs_from_labels(labels):
    """The unordered pairs of all (a, p, n) triplets, from masks; None if there is none."""
    pos, neg = pos_neg_masks(labels)
    has_pos, has_neg = pos.any(dim=1), neg.any(dim=1)
    if not bool((has_pos & has_neg).any()):  # host read: torch.where below needs one anyway
        return None
    upper = torch.ones_like(pos).triu_(diagonal=1)
    # (a, p) is in a triplet when a has a negative; (p, a) likewise: one member suffices.
    pos_pairs = pos & upper & (has_neg.unsqueeze(1) | has_neg.unsqueeze(0))
    neg_pairs = neg & upper & (has_pos.unsqueeze(1) | has_pos.unsqueeze(0))
    return torch.where(pos_pairs), torch.where(neg_pairs)


def _pairs_from_tuple(indices_tuple):
    """The unordered pairs of a miner's triplets (a pair tuple is combined into triplets:
    a positive pair counts when its anchor also has a negative pair, and vice versa)."""
    if len(indices_tuple) == 3:
        a, p, n = indices_tuple
        if len(a) == 0:
            return None
        return _unique_unordered(a, p), _unique_unordered(a, n)
    a1, p, a2, n = indices_tuple
    pos_keep = torch.isin(a1, a2)
    if not bool(pos_keep.any()):
        return None
    neg_keep = torch.isin(a2, a1)
    return (
        _unique_unordered(a1[pos_keep], p[pos_keep]),
        _unique_unordered(a2[neg_keep], n[neg_keep]),
    )
