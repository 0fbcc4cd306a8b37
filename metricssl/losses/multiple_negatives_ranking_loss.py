"""MultipleNegativesRankingLoss: in-batch softmax over (anchor, positive) pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core.validation import ArgumentError, check_bool, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer, MeanReducer
from .base_metric_loss_function import BaseMetricLossFunction


class MultipleNegativesRankingLoss(BaseMetricLossFunction):
    """Multiple negatives ranking loss: each anchor must pick its own positive from the batch.

    Henderson, Al-Rfou, Strope, Sung, Lukacs, Guo, Kumar, Miklos and Kurzweil, "Efficient
    Natural Language Response Suggestion for Smart Reply", arXiv:1705.00652, 2017; the form
    popularised by sentence-transformers. Row ``i`` of ``embeddings`` is an anchor and row
    ``i`` of ``ref_emb`` its positive; every other row of ``ref_emb`` is a negative for it.
    With ``s`` the similarity (cosine by default)::

        loss(i) = -log( exp(scale * s(a_i, p_i)) / sum_j exp(scale * s(a_i, p_j)) )

    ``ref_emb`` may have more rows than ``embeddings``: the extra rows are extra (hard)
    negatives shared by every anchor. With ``symmetric=True`` each positive must also pick
    its own anchor among the anchors, and ``loss(i)`` is the mean of the two directions.

    Duplicates: when two pairs in a batch are about the same thing, the other's positive is
    not really a negative. Pass ``labels`` (one id per pair; and optionally ``ref_labels``,
    one per row of ``ref_emb``, else the positives take their anchor's label and the extra
    rows none) and every candidate other than the anchor's own positive that shares the
    anchor's label is left out of the softmax. Not in PML; ``indices_tuple`` is not
    supported. O(N x M) time and memory; half precision takes the softmax in float32.

    Args:
        scale: the inverse temperature multiplying the similarities (> 0; 20 as in
            sentence-transformers).
        symmetric: also score each positive against all anchors.
        distance: a similarity (``is_inverted``): CosineSimilarity (default) or
            DotProductSimilarity.
        reducer: MeanReducer by default, over anchors.
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss (the
            regularizer sees ``embeddings``, the anchors).

    Example:
        >>> import torch
        >>> from metricssl.losses.multiple_negatives_ranking_loss import (
        ...     MultipleNegativesRankingLoss,
        ... )
        >>> loss_fn = MultipleNegativesRankingLoss(scale=20.0)
        >>> anchors = torch.randn(8, 32, requires_grad=True)
        >>> positives = torch.randn(8, 32, requires_grad=True)
        >>> loss_fn(anchors, ref_emb=positives).backward()
    """

    def __init__(
        self,
        scale: float = 20.0,
        symmetric: bool = False,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("scale", scale, low=0, low_inclusive=False)
        check_bool("symmetric", symmetric)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        if not self.distance.is_inverted:
            raise ArgumentError(
                "MultipleNegativesRankingLoss needs a similarity (larger = closer) as distance, "
                f"such as CosineSimilarity; got {type(self.distance).__name__}"
            )
        self.scale = scale
        self.symmetric = symmetric
        self.add_to_recordable_attributes(list_of_names=["scale"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        n = embeddings.shape[0]
        if indices_tuple is not None:
            raise ArgumentError("MultipleNegativesRankingLoss does not support indices_tuple")
        if ref_emb is embeddings:
            raise ArgumentError(
                "MultipleNegativesRankingLoss needs ref_emb: row i of ref_emb is the positive "
                "of row i of embeddings"
            )
        if ref_emb.shape[0] < n:
            raise ArgumentError(
                f"ref_emb has {ref_emb.shape[0]} rows but embeddings has {n}: every anchor "
                "needs its positive in the same row of ref_emb"
            )
        if ref_labels is not None and labels is None:
            raise ArgumentError("ref_labels was given without labels")
        sim = self.distance(embeddings, ref_emb)
        logits = sim.to(c_f.accumulation_dtype(sim.dtype)) * self.scale
        if labels is not None:
            logits = logits.masked_fill(
                _duplicates(labels, ref_labels, ref_emb.shape[0]), -torch.inf
            )
        target = c_f.torch_arange_from_size(embeddings)
        losses = F.cross_entropy(logits, target, reduction="none")
        if self.symmetric:
            backward = F.cross_entropy(logits[:, :n].T, target, reduction="none")
            losses = (losses + backward) / 2
        return {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": target,
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self) -> BaseReducer:
        return MeanReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()


def _duplicates(labels, ref_labels, n_ref: int) -> torch.Tensor:
    """(N, M) mask of the candidates that share an anchor's label, its own positive excepted."""
    n = labels.shape[0]
    if ref_labels is None:
        same = torch.zeros(n, n_ref, dtype=torch.bool, device=labels.device)
        same[:, :n] = labels.unsqueeze(1) == labels.unsqueeze(0)
    else:
        same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    same.diagonal()[:] = False
    return same
