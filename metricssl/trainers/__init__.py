"""PML's trainers (``pytorch_metric_learning.trainers``): supervised metric-learning loops over
dictionaries of models, optimizers, losses and miners, with PML's hooks and key checks.
(Self-supervised training is :class:`metricssl.ssl.Trainer`.)"""

from .base_trainer import BaseTrainer
from .cascaded_embeddings import CascadedEmbeddings
from .deep_adversarial_metric_learning import DeepAdversarialMetricLearning
from .metric_loss_only import MetricLossOnly
from .train_with_classifier import TrainWithClassifier
from .twostream_metric_loss import TwoStreamMetricLoss

__all__ = [
    "BaseTrainer",
    "CascadedEmbeddings",
    "DeepAdversarialMetricLearning",
    "MetricLossOnly",
    "TrainWithClassifier",
    "TwoStreamMetricLoss",
]
