"""``evaluate``: every retrieval, k-NN and clustering metric of a set of embeddings in one call.

A functional front end to :class:`~metricssl.eval.accuracy_calculator.AccuracyCalculator`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .accuracy_calculator import ALL_METRICS, AccuracyCalculator


def evaluate(
    query,
    query_labels,
    reference=None,
    reference_labels=None,
    ref_includes_query: bool = False,
    metrics: tuple[str, ...] = ALL_METRICS,
    k: int | str | None = "max_bin_count",
    *,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    label_comparison_fn: Callable | None = None,
    recall_at_k: tuple[int, ...] = (1, 2, 4, 8),
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    seed: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | None = None,
) -> dict:
    """Metrics of ``query`` retrieving from ``reference`` (itself when None).

    Args:
        query, query_labels, reference, reference_labels, ref_includes_query: as
            :meth:`AccuracyCalculator.get_accuracy`.
        metrics: metric names (default: all of them: precision_at_1, r_precision,
            mean_average_precision_at_r, mean_average_precision, mean_reciprocal_rank,
            recall_at_k, knn_accuracy_weighted, knn_accuracy_majority, NMI, AMI, ARI).
        k: neighbours searched for the retrieval metrics (default ``"max_bin_count"``, enough
            for R-precision and MAP@R; ``None`` ranks every reference).
        Other keyword arguments: as :class:`AccuracyCalculator`.

    Returns:
        ``{metric: value}``, with one ``recall_at_<k>`` entry per k.

    Example:
        >>> import torch
        >>> from metricssl.eval.evaluate import evaluate
        >>> emb, labels = torch.randn(300, 16), torch.randint(0, 3, (300,))
        >>> scores = evaluate(emb, labels, metrics=("precision_at_1", "recall_at_k"))
        >>> sorted(scores)
        ['precision_at_1', 'recall_at_1', 'recall_at_2', 'recall_at_4', 'recall_at_8']
    """
    if isinstance(metrics, str):
        raise TypeError(f"metrics must be a tuple or list of names, got the string {metrics!r}")
    calculator = AccuracyCalculator(
        include=tuple(metrics),
        avg_of_avgs=avg_of_avgs,
        return_per_class=return_per_class,
        k=k,
        label_comparison_fn=label_comparison_fn,
        device=device,
        recall_at_k=recall_at_k,
        knn_k=knn_k,
        knn_temperature=knn_temperature,
        seed=seed,
        progress=progress,
    )
    return calculator.get_accuracy(
        query, query_labels, reference, reference_labels, ref_includes_query
    )
