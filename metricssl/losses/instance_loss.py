"""InstanceLoss: a softmax over the batch's scaled cosine similarities."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core.validation import ArgumentError, check_distance_type, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer, MeanReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels


class InstanceLoss(BaseMetricLossFunction):
    """Instance loss (PML's ``InstanceLoss``).

    Zheng, Zheng, Garrett, Yang, Xu and Shen, "Dual-Path Convolutional Image-Text Embeddings
    with Instance Loss", ACM TOMM 2020. Each sample ``i`` gets the cross-entropy of the
    softmax over ``gamma * cos(x_i, x_j)`` for every ``j`` in the batch (itself included),
    with target column ``t_i``: the rank of ``i``'s label among the batch's distinct labels.

    This is PML's formulation exactly (the column is a label rank, not a sample index); with
    one sample per label, ``labels = torch.arange(N)``, it is the paper's instance
    classification of each sample as itself. ``ref_emb`` and ``indices_tuple`` are not
    supported (ValueError), as in PML. O(N^2) time and memory; half-precision inputs take the
    softmax in float32.

    Args:
        gamma: the scale of the cosine similarities (> 0).
        distance: must be a CosineSimilarity (the default).
        reducer: MeanReducer by default, over samples.
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.instance_loss import InstanceLoss
        >>> loss_fn = InstanceLoss(gamma=64)
        >>> embeddings = torch.randn(16, 32, requires_grad=True)
        >>> loss_fn(embeddings, torch.arange(16)).backward()
    """

    def __init__(
        self,
        gamma: float = 64,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("gamma", gamma, low=0, low_inclusive=False)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, CosineSimilarity)
        self.gamma = gamma
        self.add_to_recordable_attributes(list_of_names=["gamma"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        require_labels(labels, type(self).__name__)
        if indices_tuple is not None:
            raise ArgumentError("InstanceLoss does not support indices_tuple")
        if ref_emb is not embeddings:
            raise ArgumentError("InstanceLoss does not support ref_emb")
        logits = self.distance(embeddings)
        # Rebound, not kept: the (N, N) similarities are freed before cross_entropy allocates
        # its own (N, N) buffers (one matrix less at the peak, and fewer fresh pages to fault).
        logits = logits.to(c_f.accumulation_dtype(logits.dtype)) * self.gamma
        _, target = torch.unique(labels, return_inverse=True)
        losses = F.cross_entropy(logits, target, reduction="none")
        return {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self) -> BaseReducer:
        return MeanReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()
