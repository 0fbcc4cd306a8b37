"""Losses: every PML metric-learning loss, plus self-supervised ones (PML-compatible)."""

from .base_metric_loss_function import BaseMetricLossFunction
from .circle_loss import CircleLoss
from .contrastive_loss import ContrastiveLoss
from .generalized_lifted_structure_loss import GeneralizedLiftedStructureLoss
from .generic_pair_loss import GenericPairLoss
from .lifted_structure_loss import LiftedStructureLoss
from .margin_loss import MarginLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .multi_similarity_loss import MultiSimilarityLoss
from .signal_to_noise_ratio_losses import SignalToNoiseRatioContrastiveLoss
from .triplet_margin_loss import TripletMarginLoss
from .tuplet_margin_loss import TupletMarginLoss

__all__ = [
    "CircleLoss",
    "ContrastiveLoss",
    "MarginLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "TripletMarginLoss",
    "GeneralizedLiftedStructureLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "TupletMarginLoss",
    "BaseMetricLossFunction",
    "EmbeddingRegularizerMixin",
    "GenericPairLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
