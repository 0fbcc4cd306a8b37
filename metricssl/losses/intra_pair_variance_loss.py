"""IntraPairVarianceLoss: penalise pairs that stray from their group's mean similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from ..reducers.fused import FusedReduction
from .base_metric_loss_function import require_ref_labels
from .generic_pair_loss import GenericPairLoss


class IntraPairVarianceLoss(GenericPairLoss):
    """Intra-pair variance loss (PML's ``IntraPairVarianceLoss``).

    Yu and Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019 (the intra-pair
    variance term). With ``mu_pos`` and ``mu_neg`` the mean similarity of the positive and
    of the negative pairs, each positive pair ``s_p`` costs ``relu((1 - pos_eps) * mu_pos -
    s_p)^2`` and each negative pair ``s_n`` costs ``relu(s_n - (1 + neg_eps) * mu_neg)^2``
    (the roles flip for a distance, where smaller means closer). The means are part of the
    gradient. Two sub-losses, ``pos_loss`` and ``neg_loss``.

    Without an ``indices_tuple`` and with a Mean, Sum or AvgNonZero reducer, both are
    reduced straight from the similarity matrix and the label masks, with a hand-written
    gradient (:class:`GroupVariancePenalty`); PML first lists every pair. Other reducers
    take PML's per-pair path. Half-precision inputs are computed in float32.

    Args:
        pos_eps: the slack below the mean positive similarity (``pos_eps``).
        neg_eps: the slack above the mean negative similarity (``neg_eps``).
        distance: CosineSimilarity by default.
        reducer: MeanReducer by default, over pairs.
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.intra_pair_variance_loss import IntraPairVarianceLoss
        >>> loss_fn = IntraPairVarianceLoss(pos_eps=0.01, neg_eps=0.01)
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (32,))).backward()
    """

    def __init__(
        self,
        pos_eps: float = 0.01,
        neg_eps: float = 0.01,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("pos_eps", pos_eps)
        check_number("neg_eps", neg_eps)
        super().__init__(
            mat_based_loss=False,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.pos_eps = pos_eps
        self.neg_eps = neg_eps
        self.add_to_recordable_attributes(list_of_names=["pos_eps", "neg_eps"], is_stat=False)

    def _sub_loss_names(self):
        return ["pos_loss", "neg_loss"]

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        fused_pos = self.fused_reduction("pos_loss")
        fused_neg = self.fused_reduction("neg_loss")
        if (
            indices_tuple is not None
            or labels is None
            or not _penalty_reducible(fused_pos)
            or not _penalty_reducible(fused_neg)
        ):
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, None, type(self).__name__)
        if not self._has_pairs(labels, ref_labels):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        mat = mat.to(c_f.accumulation_dtype(mat.dtype))
        pos, neg = pos_neg_masks(labels, ref_labels)
        out = {}
        # Positives are usually few: gather them. Negatives are most of the matrix: mask it.
        for name, fused, sims, group, eps, increase in (
            ("pos_loss", fused_pos, mat[pos], None, self.pos_eps, self.distance.is_inverted),
            ("neg_loss", fused_neg, mat, neg, self.neg_eps, not self.distance.is_inverted),
        ):
            scale = 1 - eps if increase else 1 + eps  # as variance_with_eps
            nonzero_only = fused.low == 0  # AvgNonZeroReducer
            total, count = GroupVariancePenalty.apply(sims, group, scale, increase, nonzero_only)
            out[name] = fused.loss_entry(total, count, embeddings)
        return out

    def _compute_loss(self, pos_pairs, neg_pairs, indices_tuple):
        out = {}
        for name, pairs, eps, increase, indices, kind in [
            (
                "pos_loss",
                pos_pairs,
                self.pos_eps,
                self.distance.is_inverted,
                lmu.pos_pairs_from_tuple(indices_tuple),
                "pos_pair",
            ),
            (
                "neg_loss",
                neg_pairs,
                self.neg_eps,
                not self.distance.is_inverted,
                lmu.neg_pairs_from_tuple(indices_tuple),
                "neg_pair",
            ),
        ]:
            loss = 0
            if len(pairs) > 0:
                x = pairs.to(c_f.accumulation_dtype(pairs.dtype))
                var = self.variance_with_eps(x, x.mean(), eps, increase)
                loss = (F.relu(var) ** 2).to(pairs.dtype)
            out[name] = {"losses": loss, "indices": indices, "reduction_type": kind}
        return out

    def variance_with_eps(self, pairs, mean_sim, eps, incentivize_increase):
        """PML's helper: how far each pair falls short of its (slackened) group mean."""
        if incentivize_increase:
            return (1 - eps) * mean_sim - pairs
        return pairs - (1 + eps) * mean_sim


def _penalty_reducible(fused: FusedReduction | None) -> bool:
    """Whether the reducer keeps every pair (Mean, Sum) or the non-zero ones (AvgNonZero):
    the rules :class:`GroupVariancePenalty` reduces without listing the pairs."""
    return fused is not None and fused.low in (None, 0) and fused.high is None


class GroupVariancePenalty(torch.autograd.Function):
    """``sum(relu(sign * (s - scale * mean(s)))**2)`` over a group of similarities ``s``.

    ``sign`` is -1 when the pairs should rise above the slackened mean, else +1; the mean
    is part of the gradient. ``group``: a bool mask over ``sims`` (None: every entry). Also
    returns the count the reducer divides by: the non-zero terms if ``nonzero_only``, else
    the group's size.

    Written out by hand because autograd would keep about ten (N, M) temporaries for the
    dense negatives; this keeps one, and the backward allocates one more:
    ``d total / d s = 2 * sign * group * (r - scale * sum(r) / size)`` with ``r`` the
    clamped, masked deviations.
    """

    @staticmethod
    def forward(ctx, sims, group, scale, increase, nonzero_only):
        flat = sims.reshape(-1)
        if group is None:
            weight = None
            size = torch.tensor(flat.numel(), device=flat.device)
            mean = flat.sum() / size.clamp(min=1)
        else:
            weight = group.reshape(-1).to(flat.dtype)
            size = group.sum()
            mean = torch.dot(flat, weight) / size.clamp(min=1)
        deviation = flat - scale * mean
        if increase:
            deviation.neg_()
        deviation.clamp_(min=0)
        if weight is not None:
            deviation.mul_(weight)
        ctx.save_for_backward(deviation, weight, size)
        ctx.scale, ctx.sign = scale, -1.0 if increase else 1.0
        ctx.shape = sims.shape
        total = torch.dot(deviation, deviation)
        count = (deviation > 0).sum() if nonzero_only else size
        ctx.mark_non_differentiable(count)
        return total, count

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_count):
        deviation, weight, size = ctx.saved_tensors
        shift = ctx.scale * deviation.sum() / size.clamp(min=1)
        grad = deviation - shift
        if weight is not None:
            grad.mul_(weight)
        grad.mul_(2 * ctx.sign * grad_total)
        return grad.view(ctx.shape), None, None, None, None
