"""PML's import path ``pytorch_metric_learning.utils.accuracy_calculator``.

``AccuracyCalculator`` is :class:`metricssl.eval.accuracy_calculator.AccuracyCalculator`,
``FaissKNN`` / ``FaissKMeans`` are :mod:`metricssl.utils.inference`'s, and the functions are
PML's metric helpers over a (queries x k) table of neighbour labels, from
:mod:`metricssl.eval.knn_table` (all re-exported).

Example:
    >>> import torch
    >>> from metricssl.utils.accuracy_calculator import EQUALITY, precision_at_k
    >>> knn_labels = torch.tensor([[0, 1], [1, 1]])
    >>> float(precision_at_k(knn_labels, torch.tensor([[0], [1]]), 1, False, False, EQUALITY))
    1.0
"""

from ..eval.accuracy_calculator import EQUALITY, AccuracyCalculator
from ..eval.knn_table import (
    get_label_match_counts,
    get_lone_query_labels,
    get_relevance_mask,
    get_unique_labels,
    maybe_get_avg_of_avgs,
    mean_average_precision,
    mean_reciprocal_rank,
    nan_accuracy,
    precision_at_k,
    r_precision,
    try_getting_not_lone_labels,
)
from .inference import FaissKMeans, FaissKNN

__all__ = [
    "EQUALITY",
    "AccuracyCalculator",
    "FaissKMeans",
    "FaissKNN",
    "get_label_match_counts",
    "get_lone_query_labels",
    "get_relevance_mask",
    "get_unique_labels",
    "maybe_get_avg_of_avgs",
    "mean_average_precision",
    "mean_reciprocal_rank",
    "nan_accuracy",
    "precision_at_k",
    "r_precision",
    "try_getting_not_lone_labels",
]
