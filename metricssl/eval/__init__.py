"""Evaluation of embeddings: retrieval metrics (PML-compatible ``AccuracyCalculator``), exact
chunked k-NN search, k-NN classification, k-means clustering scores, linear evaluation (a
classifier on frozen features), and representation diagnostics (alignment, uniformity,
effective rank, collapse)."""

from .accuracy_calculator import ALL_METRICS, EXTRA_METRICS, PML_METRICS, AccuracyCalculator
from .clustering import cluster, clustering_scores
from .diagnostics import alignment, effective_rank, embedding_std, singular_values, uniformity
from .evaluate import evaluate
from .knn import ExactKNN, knn
from .linear import LinearClassifier, LinearEvaluation, linear_evaluation, linear_probe

__all__ = [
    "ALL_METRICS",
    "EXTRA_METRICS",
    "PML_METRICS",
    "AccuracyCalculator",
    "ExactKNN",
    "LinearClassifier",
    "LinearEvaluation",
    "alignment",
    "cluster",
    "clustering_scores",
    "effective_rank",
    "embedding_std",
    "evaluate",
    "knn",
    "linear_evaluation",
    "linear_probe",
    "singular_values",
    "uniformity",
]
