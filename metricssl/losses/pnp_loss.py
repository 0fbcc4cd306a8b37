"""PNPLoss: penalise the negatives ranked before each positive, with a chosen decay."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_choice, check_distance_type, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import BaseMetricLossFunction, require_labels
from .rank_utils import reject_indices_tuple, reject_ref_emb, row_columns, soft_rank_counts


class PNPLoss(BaseMetricLossFunction):
    """Rank-based loss on the number of negatives ranked before each positive (PNP).

    Li, Ji, Zhang, Song, Liang and Yuan, "Rethinking the Optimization of Average Precision:
    Only Penalizing Negative Instances before Positive Ones is Enough", AAAI 2022. For a
    query ``a`` with positives ``P`` (itself included) and negatives ``N``, and ``s`` its
    cosine similarities::

        R_j = sum_{k in N} sigmoid((s_k - s_j) / anneal)        for each j in P
        loss_a = 1/|P| sum_{j in P} f(R_j)

    averaged over the queries that have a positive. The variant picks ``f``:
    ``"O"`` R, ``"Ds"`` log(1 + R), ``"Dq"`` (1 + R)^-alpha (the loss is then one minus the
    average), ``"Iu"`` (1 + R) log(1 + R), ``"Ib"`` (b R - log(1 + b R)) / b^2. The sigmoid is
    PML's, with its exponent clamped to [-50, 50]. Labels are required; ``ref_emb`` and
    ``indices_tuple`` are not supported (ValueError); the reducer receives an already reduced
    value, as in PML.

    Compatibility: same values and gradients as PML 2.9, which builds three N x N x N
    tensors; this walks blocks of queries within the memory budget and only ranks each
    query's positives, O(N^2 * samples per class). Half-precision inputs are computed in
    float32 and the loss is returned in the input dtype.

    Args:
        b: the ``Ib`` variant's slope (> 0).
        alpha: the ``Dq`` variant's exponent.
        anneal: the sigmoid's temperature (> 0).
        variant: one of ``"Ds"``, ``"Dq"``, ``"Iu"``, ``"Ib"``, ``"O"``.
        distance: must be a CosineSimilarity (the default).
        reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.pnp_loss import PNPLoss
        >>> loss_fn = PNPLoss(variant="Dq", alpha=4)
        >>> embeddings = torch.randn(16, 32, requires_grad=True)
        >>> loss_fn(embeddings, torch.randint(0, 4, (16,))).backward()
    """

    VARIANTS = ["Ds", "Dq", "Iu", "Ib", "O"]

    def __init__(
        self,
        b: float = 2,
        alpha: float = 1,
        anneal: float = 0.01,
        variant: str = "O",
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("b", b, low=0, low_inclusive=False)
        check_number("alpha", alpha)
        check_number("anneal", anneal, low=0, low_inclusive=False)
        check_choice("variant", variant, self.VARIANTS)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        check_distance_type(self, CosineSimilarity)
        self.b = b
        self.alpha = alpha
        self.anneal = anneal
        self.variant = variant

    def get_default_distance(self):
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        reject_indices_tuple(indices_tuple, name)
        require_labels(labels, name)
        reject_ref_emb(embeddings, labels, ref_emb, ref_labels, name)
        pos, neg = pos_neg_masks(labels)
        has_pos = pos.any(dim=1)
        if not bool(has_pos.any() & neg.any()):  # one host read (a CUDA sync) for both
            # No positive to rank, or no negative to rank above one: every f(R) is f(0),
            # a constant, and the loss is 0 (1 - 1 for "Dq").
            return self.zero_losses()
        # A query with a positive also ranks itself among its positives (PML's I_pos).
        pos |= torch.diag(has_pos)
        cols, valid = row_columns(pos)
        acc = c_f.accumulation_dtype(embeddings.dtype)
        sim = self.distance(embeddings.to(acc))
        ranks = soft_rank_counts(sim, cols, valid, [neg], self.anneal, clamped=True)[..., 0]
        terms = torch.where(valid, self._decay(ranks), 0)
        n_pos = valid.sum(dim=1)
        per_query = terms.sum(dim=1)[has_pos] / n_pos[has_pos]
        loss = per_query.sum() / has_pos.sum()
        if self.variant == "Dq":
            loss = 1 - loss
        return {
            "loss": {
                "losses": loss.to(embeddings.dtype),
                "indices": torch.where(has_pos)[0],
                "reduction_type": "already_reduced",
            }
        }

    def _decay(self, ranks: torch.Tensor) -> torch.Tensor:
        """The variant's ``f`` applied to the counts of negatives ranked before a positive."""
        if self.variant == "Ds":
            return torch.log1p(ranks)
        if self.variant == "Dq":
            return (1 + ranks) ** (-self.alpha)
        if self.variant == "Iu":
            return (1 + ranks) * torch.log1p(ranks)
        if self.variant == "Ib":
            b = self.b
            return (b * ranks - torch.log1p(b * ranks)) / b**2
        return ranks
