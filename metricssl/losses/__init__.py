"""Losses: every PML metric-learning loss, plus self-supervised ones (PML-compatible)."""

from .barlow_twins_loss import BarlowTwinsLoss
from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .circle_loss import CircleLoss
from .contrastive_loss import ContrastiveLoss
from .cross_batch_memory import CrossBatchMemory
from .generalized_lifted_structure_loss import GeneralizedLiftedStructureLoss
from .generic_pair_loss import GenericPairLoss
from .lifted_structure_loss import LiftedStructureLoss
from .margin_loss import MarginLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .multi_similarity_loss import MultiSimilarityLoss
from .multiple_losses import MultipleLosses
from .n_pairs_loss import NPairsLoss
from .negative_cosine_loss import NegativeCosineSimilarityLoss
from .ntxent_loss import NTXentLoss
from .self_supervised_loss import SelfSupervisedLoss
from .signal_to_noise_ratio_losses import SignalToNoiseRatioContrastiveLoss
from .supcon_loss import SupConLoss
from .triplet_margin_loss import TripletMarginLoss
from .tuplet_margin_loss import TupletMarginLoss
from .two_view_loss import TwoViewLoss
from .vicreg_loss import VICRegLoss

__all__ = [
    "BarlowTwinsLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CircleLoss",
    "ContrastiveLoss",
    "CrossBatchMemory",
    "EmbeddingRegularizerMixin",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "LiftedStructureLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "MultipleLosses",
    "NPairsLoss",
    "NTXentLoss",
    "NegativeCosineSimilarityLoss",
    "SelfSupervisedLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SupConLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "TwoViewLoss",
    "VICRegLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
]
