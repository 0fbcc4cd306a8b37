"""RegularFaceRegularizer: penalises each class weight's similarity to its nearest other one."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.chunking import row_chunks
from ..core.validation import ArgumentError
from ..distances import CosineSimilarity
from .base_regularizer import BaseRegularizer


class RegularFaceRegularizer(BaseRegularizer):
    """Row ``i`` costs its similarity to the most similar other row; averaged by default.

    From Zhao, Xu and Cheng, "RegularFace: Deep Face Recognition via Exclusive
    Regularization", CVPR 2019: spreading class centres apart ("exclusive
    regularization"). Usually the ``weight_regularizer`` of a loss with one weight vector
    per class. ``distance`` must be a similarity (``is_inverted``), CosineSimilarity by
    default.

    The nearest other row is found without gradient, a block of rows at a time (memory
    stays within :func:`metricssl.core.chunking.get_memory_budget`); the penalty is then
    recomputed for those pairs only, so the backward pass costs O(rows x dim) instead of
    back-propagating through the full rows x rows similarity matrix, with the same gradient.

    Example:
        >>> import torch
        >>> from metricssl.regularizers.regular_face_regularizer import RegularFaceRegularizer
        >>> w = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
        >>> round(RegularFaceRegularizer()(w).item(), 4)
        0.7071

    Args:
        distance: a similarity (``distance.is_inverted``), CosineSimilarity by default.
        reducer: reduces the per-row penalties (MeanReducer by default).
        collect_stats: record per-call statistics.
    """

    def __init__(self, distance=None, reducer=None, collect_stats: bool | None = None):
        super().__init__(distance=distance, reducer=reducer, collect_stats=collect_stats)
        if not self.distance.is_inverted:
            raise ArgumentError(
                "RegularFaceRegularizer requires distance to be a similarity "
                f"(is_inverted=True, e.g. CosineSimilarity), got {type(self.distance).__name__}"
            )

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, weights):
        if weights.shape[0] == 0:  # PML fails in a max over nothing
            raise ArgumentError("x is empty: RegularFaceRegularizer needs at least one class row")
        nearest = self.nearest_other_rows(weights)
        return {
            "loss": {
                "losses": self.pair_similarities(weights, nearest),
                "indices": c_f.torch_arange_from_size(weights),
                "reduction_type": "element",
            }
        }

    @torch.no_grad()
    def nearest_other_rows(self, weights):
        """Index of the most similar other row of each row (itself when there is one row)."""
        n = weights.shape[0]
        nearest = torch.empty(n, dtype=torch.long, device=weights.device)
        fill = c_f.neg_inf(weights.dtype)
        for rows in row_chunks(n, n * weights.element_size()):
            sims = self.distance(weights[rows], weights)
            local = torch.arange(sims.shape[0], device=weights.device)
            sims[local, local + rows.start] = fill
            # smallest_dist = max for a similarity; first index on ties, as PML.
            nearest[rows] = self.distance.smallest_dist(sims, dim=1)[1]
        return nearest

    def pair_similarities(self, weights, nearest):
        distance = self.distance
        try:
            normed = distance.maybe_normalize(weights)
            sims = distance.pairwise_distance(normed, normed[nearest])
        except NotImplementedError:
            # A user distance with only compute_mat: take the pairs out of the full matrix.
            return distance(weights).gather(1, nearest[:, None]).squeeze(1)
        return sims**distance.power if distance.power != 1 else sims
