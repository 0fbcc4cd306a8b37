"""Losses: every PML metric-learning loss, plus self-supervised ones (PML-compatible)."""

from .angular_loss import AngularLoss
from .arcface_loss import ArcFaceLoss
from .barlow_twins_loss import BarlowTwinsLoss
from .base_loss_wrapper import BaseLossWrapper
from .base_metric_loss_function import BaseMetricLossFunction
from .circle_loss import CircleLoss
from .contrastive_loss import ContrastiveLoss
from .cosface_loss import CosFaceLoss
from .cross_batch_memory import CrossBatchMemory
from .dcl_loss import DCLLoss, DCLWLoss
from .dino_loss import DINOLoss
from .dynamic_soft_margin_loss import DynamicSoftMarginLoss
from .fast_ap_loss import FastAPLoss
from .generalized_lifted_structure_loss import GeneralizedLiftedStructureLoss
from .generic_pair_loss import GenericPairLoss
from .histogram_loss import HistogramLoss
from .instance_loss import InstanceLoss
from .intra_pair_variance_loss import IntraPairVarianceLoss
from .large_margin_softmax_loss import LargeMarginSoftmaxLoss
from .lifted_structure_loss import LiftedStructureLoss
from .manifold_loss import ManifoldLoss
from .margin_loss import MarginLoss
from .mixins import EmbeddingRegularizerMixin, WeightMixin, WeightRegularizerMixin
from .mmcr_loss import MMCRLoss
from .multi_similarity_loss import MultiSimilarityLoss
from .multiple_losses import MultipleLosses
from .multiple_negatives_ranking_loss import MultipleNegativesRankingLoss
from .n_pairs_loss import NPairsLoss
from .nca_loss import NCALoss
from .negative_cosine_loss import NegativeCosineSimilarityLoss
from .normalized_softmax_loss import NormalizedSoftmaxLoss
from .ntxent_loss import NTXentLoss
from .p2s_grad_loss import P2SGradLoss
from .pnp_loss import PNPLoss
from .proxy_anchor_loss import ProxyAnchorLoss
from .proxy_losses import ProxyNCALoss
from .ranked_list_loss import RankedListLoss
from .self_supervised_loss import SelfSupervisedLoss
from .signal_to_noise_ratio_losses import SignalToNoiseRatioContrastiveLoss
from .smooth_ap import SmoothAPLoss
from .soft_triple_loss import SoftTripleLoss
from .sphereface_loss import SphereFaceLoss
from .subcenter_arcface_loss import SubCenterArcFaceLoss
from .supcon_loss import SupConLoss
from .swav_loss import SwAVLoss, sinkhorn
from .tcm_loss import ThresholdConsistentMarginLoss
from .tico_loss import TiCoLoss
from .triplet_margin_loss import TripletMarginLoss
from .tuplet_margin_loss import TupletMarginLoss
from .two_view_loss import TwoViewLoss
from .vicreg_loss import VICRegLoss

__all__ = [
    "AngularLoss",
    "ArcFaceLoss",
    "BarlowTwinsLoss",
    "BaseLossWrapper",
    "BaseMetricLossFunction",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "DCLLoss",
    "DCLWLoss",
    "DINOLoss",
    "DynamicSoftMarginLoss",
    "EmbeddingRegularizerMixin",
    "FastAPLoss",
    "GeneralizedLiftedStructureLoss",
    "GenericPairLoss",
    "HistogramLoss",
    "InstanceLoss",
    "IntraPairVarianceLoss",
    "LargeMarginSoftmaxLoss",
    "LiftedStructureLoss",
    "ManifoldLoss",
    "MMCRLoss",
    "MarginLoss",
    "MultiSimilarityLoss",
    "MultipleLosses",
    "MultipleNegativesRankingLoss",
    "NCALoss",
    "NPairsLoss",
    "NTXentLoss",
    "NegativeCosineSimilarityLoss",
    "NormalizedSoftmaxLoss",
    "P2SGradLoss",
    "PNPLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "RankedListLoss",
    "SelfSupervisedLoss",
    "SignalToNoiseRatioContrastiveLoss",
    "SmoothAPLoss",
    "SoftTripleLoss",
    "SphereFaceLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "SwAVLoss",
    "ThresholdConsistentMarginLoss",
    "TiCoLoss",
    "TripletMarginLoss",
    "TupletMarginLoss",
    "TwoViewLoss",
    "VICRegLoss",
    "WeightMixin",
    "WeightRegularizerMixin",
    "sinkhorn",
]
