"""CenterInvariantRegularizer: equalises the squared norms of a loss's class weights."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.validation import ArgumentError, check_distance_type
from ..distances import LpDistance
from .base_regularizer import BaseRegularizer


class CenterInvariantRegularizer(BaseRegularizer):
    """Penalises each row's squared norm for deviating from the mean squared norm.

    Row ``i`` costs ``(||w_i||^2 - mean_j ||w_j||^2)^2 / 4``; the default reducer averages.
    From Wu, Liu, Huang and Hu, "Deep Face Recognition with Center Invariant Loss",
    ACM MM Workshops (Thematic Workshops) 2017. Usually the ``weight_regularizer`` of a loss
    with one weight vector per class.

    The norm comes from ``distance.get_norm``, so ``distance`` must be an
    :class:`~metricssl.distances.LpDistance` with ``power=1`` and
    ``normalize_embeddings=False`` (the default; its ``p`` picks the norm).

    Example:
        >>> import torch
        >>> from metricssl.regularizers.center_invariant_regularizer import (
        ...     CenterInvariantRegularizer,
        ... )
        >>> CenterInvariantRegularizer()(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        tensor(4.)

    Args:
        distance: an ``LpDistance(power=1, normalize_embeddings=False)``.
        reducer: reduces the per-row penalties (MeanReducer by default).
        collect_stats: record per-call statistics.
    """

    def __init__(self, distance=None, reducer=None, collect_stats: bool | None = None):
        super().__init__(distance=distance, reducer=reducer, collect_stats=collect_stats)
        check_distance_type(self, LpDistance)
        if self.distance.power != 1 or self.distance.normalize_embeddings:
            raise ArgumentError(
                "CenterInvariantRegularizer requires distance=LpDistance(power=1, "
                f"normalize_embeddings=False), got power={self.distance.power}, "
                f"normalize_embeddings={self.distance.normalize_embeddings}"
            )

    def get_default_distance(self):
        return LpDistance(power=1, normalize_embeddings=False)

    def compute_loss(self, weights):
        acc = c_f.accumulation_dtype(weights.dtype)
        w = weights.to(acc)
        if self.distance.p == 2:
            squared_norms = torch.sum(w * w, dim=1)  # same value and gradient, no sqrt
        else:
            squared_norms = self.distance.get_norm(w) ** 2
        deviations = squared_norms - torch.mean(squared_norms)
        return {
            "loss": {
                "losses": (deviations**2 / 4).to(weights.dtype),
                "indices": c_f.torch_arange_from_size(weights),
                "reduction_type": "element",
            }
        }
