"""NPairsLoss: one positive pair per class, each anchor classifying its own positive."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError
from ..distances import BaseDistance, DotProductSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels


def first_pair_per_class(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each label with two or more members (ascending): its first and second members.

    This is the pair PML keeps for each label when it lists all positive pairs in row-major
    order and takes the first pair per anchor label, found here without listing them.
    """
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = (torch.cumsum(counts, 0) - counts)[counts >= 2]
    return order[starts], order[starts + 1]


def first_pair_per_anchor_label(a: torch.Tensor, p: torch.Tensor, labels: torch.Tensor):
    """The first pair (in tuple order) of each distinct anchor label, in ascending label order.

    Equivalent to PML's ``np.unique(labels[a], return_index=True)``, on the tensors' device.
    """
    _, inverse = torch.unique(labels[a], return_inverse=True)
    position = torch.arange(len(a), device=a.device)
    first = torch.full((int(inverse.max()) + 1,), len(a), device=a.device, dtype=position.dtype)
    first = first.scatter_reduce(0, inverse, position, reduce="amin")
    return a[first], p[first]


class NPairsLoss(BaseMetricLossFunction):
    """N-pair loss (PML's ``NPairsLoss``).

    Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS
    2016. One positive pair ``(a_k, p_k)`` is taken per class present in the batch (or in the
    miner's ``indices_tuple``); each anchor ``a_k`` then does a softmax classification of its
    own positive ``p_k`` among all the positives, the other classes' positives acting as
    negatives::

        loss_k = cross_entropy([s(a_k, p_1), ..., s(a_k, p_K)], target=k)

    The pair of a class is the first positive pair PML would list (its first two members in
    batch order; with an ``indices_tuple``, the first pair whose anchor has that label). For a
    distance (not inverted) the negated distance is the similarity. The cross-entropy runs in
    float32 for half-precision inputs; the loss comes back in the input dtype.

    Args:
        distance: DotProductSimilarity by default.
        reducer: MeanReducer by default (over the K anchors).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.n_pairs_loss import NPairsLoss
        >>> loss_fn = NPairsLoss()
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.num_pairs = 0
        self.add_to_recordable_attributes(name="num_pairs", is_stat=True)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        require_labels(labels, type(self).__name__)
        if ref_emb is not embeddings or ref_labels is not labels:
            raise ArgumentError(f"{type(self).__name__} does not support ref_emb or ref_labels")
        if indices_tuple is None:
            anchor_idx, positive_idx = first_pair_per_class(labels)
        else:
            a, p = lmu.convert_to_pairs(indices_tuple, labels)[:2]
            if len(a) == 0:
                self.num_pairs = 0
                return self.zero_losses()
            anchor_idx, positive_idx = first_pair_per_anchor_label(a.long(), p.long(), labels)
        self.num_pairs = len(anchor_idx)
        if self.num_pairs == 0:
            return self.zero_losses()
        sim = self.distance(embeddings[anchor_idx], embeddings[positive_idx])
        sim = sim.to(c_f.accumulation_dtype(sim.dtype))
        if not self.distance.is_inverted:
            sim = -sim
        targets = torch.arange(self.num_pairs, device=embeddings.device)
        losses = F.cross_entropy(sim, targets, reduction="none")
        return {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": anchor_idx,
                "reduction_type": "element",
            }
        }

    def get_default_distance(self) -> BaseDistance:
        return DotProductSimilarity()
