"""Per-epoch monitoring: online weighted-kNN accuracy and label-free collapse diagnostics."""

from __future__ import annotations

import math
import warnings

import torch

# Below these the representation has (nearly) collapsed. embedding_std is scaled by sqrt(d):
# about 1 for embeddings spread evenly over the sphere, 0 when they are all the same.
COLLAPSE_STD = 0.05
COLLAPSE_RANK = 2.0


class CollapseWarning(UserWarning):
    """The embeddings are (nearly) constant or use (nearly) one direction."""


def knn_accuracy(
    query: torch.Tensor,
    query_labels: torch.Tensor,
    reference: torch.Tensor,
    reference_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Weighted k-NN classification accuracy of ``query`` against a labelled ``reference``.

    Cosine similarity, the ``k`` nearest references vote for their class with weight
    ``exp(similarity / temperature)`` (Wu et al., CVPR 2018), via :func:`metricssl.eval.evaluate`.
    """
    from ..eval.evaluate import evaluate  # lazily: metricssl.eval pulls in scikit-learn

    scores = evaluate(
        query,
        query_labels,
        reference,
        reference_labels,
        metrics=("knn_accuracy_weighted",),
        k=1,
        knn_k=min(k, reference.shape[0]),
        knn_temperature=temperature,
        progress=False,
    )
    return float(scores["knn_accuracy_weighted"])


def collapse_diagnostics(features: torch.Tensor) -> dict[str, float]:
    """``embedding_std`` (per-dimension std of the L2-normalised features, times sqrt(d)),
    ``effective_rank`` (RankMe) and ``collapse`` (1.0 when either is below its threshold)."""
    from ..eval.diagnostics import effective_rank, embedding_std

    d = features.shape[1]
    std = embedding_std(features) * math.sqrt(d)
    rank = effective_rank(features)
    collapsed = std < COLLAPSE_STD or rank < COLLAPSE_RANK
    return {"embedding_std": std, "effective_rank": rank, "collapse": float(collapsed)}


def warn_if_collapsed(diagnostics: dict[str, float], epoch: int) -> None:
    if diagnostics.get("collapse"):
        warnings.warn(
            f"epoch {epoch}: the representation looks collapsed (normalised embedding std "
            f"{diagnostics['embedding_std']:.3g} x sqrt(d) < {COLLAPSE_STD} or effective rank "
            f"{diagnostics['effective_rank']:.3g} < {COLLAPSE_RANK}); try a lower learning "
            f"rate, a larger batch or other method hyper-parameters",
            CollapseWarning,
            stacklevel=3,
        )
