"""SmoothAPLoss: one minus a sigmoid-smoothed average precision per query."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.validation import ArgumentError, check_distance_type, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels
from .rank_utils import reject_ref_emb, soft_rank_counts


class SmoothAPLoss(BaseMetricLossFunction):
    """Smooth-AP: average precision with the ranking's step function replaced by a sigmoid.

    Brown, Xie, Kalogeiton and Zisserman, "Smooth-AP: Smoothing the Path Towards Large-Scale
    Image Retrieval", ECCV 2020. Every embedding is a query against the batch; its positive
    set ``P`` is its class, itself included (as in the authors' code). With
    ``G(x) = sigmoid(x / temperature)`` and ``s`` the query's cosine similarities::

        AP = 1/|P| sum_{j in P} (1 + sum_{k in P, k != j} G(s_k - s_j))
                                / (1 + sum_{k != j} G(s_k - s_j))

    and the query's loss is ``1 - AP`` (times its miner weight when an ``indices_tuple`` is
    given), averaged by the reducer. As in PML 2.9, every class in the batch must have the
    same number of samples (``samplers.MPerClassSampler`` gives such batches); otherwise a
    ValueError is raised. Labels are required; ``ref_emb`` is not supported.

    Compatibility: PML 2.9 builds an N x N x N tensor; this walks blocks of queries within
    the memory budget and only ranks each query's positives, O(N^2 * samples per class).
    PML 2.9 takes positives by position (blocks of as many consecutive samples as there are
    classes), which is the class only when each class has as many samples as there are
    classes (e.g. labels ``[A, A, A, B, B, B, C, C, C]``); there the values agree. Here the
    positives always come from the labels, so any order and any class size are correct. A
    batch of singletons (no query has another positive) or of one class (every AP is 1)
    gives a zero loss that still back-propagates. The loss is returned in the input dtype
    (PML returns float32).

    Args:
        temperature: the sigmoid's temperature (> 0); small values approach the true ranks.
        distance: must be a CosineSimilarity (the default).
        reducer: MeanReducer by default (over queries).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.smooth_ap import SmoothAPLoss
        >>> loss_fn = SmoothAPLoss(temperature=0.01)
        >>> embeddings = torch.randn(12, 16, requires_grad=True)
        >>> labels = torch.arange(4).repeat_interleave(3)  # 4 classes x 3 samples
        >>> loss_fn(embeddings, labels).backward()
    """

    def __init__(
        self,
        temperature: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("temperature", temperature, low=0, low_inclusive=False)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, CosineSimilarity)
        self.temperature = temperature

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels(labels, name)
        reject_ref_emb(embeddings, labels, ref_emb, ref_labels, name)
        _, group, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        # Host reads: a bad batch must raise here, and the class size is a shape.
        if len(counts) == 0:  # PML raises a ValueError for an empty batch too
            raise ArgumentError(f"{name}: the batch is empty (no labels)")
        if len(counts) > 1 and bool((counts != counts[0]).any()):
            raise ArgumentError(
                f"{name}: every class in the batch must have the same number of samples, "
                f"got {counts.tolist()} (samplers.MPerClassSampler gives such batches)"
            )
        per_class = int(counts[0])
        if per_class == 1 or len(counts) == 1:
            # No query has another positive, or none has a negative: every AP is 1.
            return {"ap_loss": self.zero_loss()}
        acc = c_f.accumulation_dtype(embeddings.dtype)
        sim = self.distance(embeddings.to(acc))
        same = group.unsqueeze(1) == group.unsqueeze(0)
        # Each query's class members (itself included), in index order: one row per class.
        members = torch.argsort(group, stable=True).view(-1, per_class)
        cols = members[group]
        valid = torch.ones_like(cols, dtype=torch.bool)
        sums = soft_rank_counts(sim, cols, valid, [same, ~same], self.temperature)
        pos_rank = 1 + sums[..., 0]
        all_rank = pos_rank + sums[..., 1]
        ap = (pos_rank / all_rank).sum(dim=1) / per_class
        weights = lmu.convert_to_weights(indices_tuple, labels, dtype=acc)
        losses = (1 - ap) * weights
        return {
            "ap_loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": c_f.torch_arange_from_size(losses),
                "reduction_type": "element",
            }
        }
