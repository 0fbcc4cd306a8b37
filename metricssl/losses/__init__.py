"""Losses: every PML metric-learning loss, plus self-supervised ones (PML-compatible)."""

from .base_metric_loss_function import BaseMetricLossFunction
from .generic_pair_loss import GenericPairLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin

__all__ = [
    "BaseMetricLossFunction",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
