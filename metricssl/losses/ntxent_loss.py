"""NTXentLoss: the normalised temperature-scaled cross-entropy (InfoNCE) over positive pairs."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import BaseReducer
from .base_metric_loss_function import require_labels_or_indices_tuple, require_ref_labels
from .generic_pair_loss import GenericPairLoss
from .infonce import info_nce_terms


class NTXentLoss(GenericPairLoss):
    """NT-Xent / InfoNCE, one loss per positive pair (PML's ``NTXentLoss``).

    Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of
    Visual Representations", ICML 2020 (after van den Oord, Li and Vinyals, "Representation
    Learning with Contrastive Predictive Coding", arXiv 2018). For a positive pair ``(a, p)``
    with similarities ``s`` and temperature ``T``::

        loss(a, p) = -log( exp(s_ap/T) / (exp(s_ap/T) + sum_n exp(s_an/T)) )

    where ``n`` runs over the negatives of the same anchor ``a``. For a distance (not
    inverted) the negated distance is the similarity, as in PML.

    How it is computed: each anchor's negatives are summed once, as a row-wise log-sum-exp
    over the query-by-reference matrix, and every positive's loss is then
    ``softplus(lse_neg[a] - s_ap/T)``, the formula of the one InfoNCE
    (:func:`~metricssl.losses.infonce.info_nce_terms`; the SSL methods call
    :func:`~metricssl.losses.infonce.info_nce`, which ends in it). That is O(N^2) time and
    memory; PML builds a (positive pairs x negative pairs) matrix instead. Without an
    ``indices_tuple`` and with a Mean/Sum/Threshold/AvgNonZero reducer the mean is taken
    straight from the matrix, with no list of pairs. Log-sum-exps run in float32 for
    half-precision inputs; the loss comes back in the input dtype.

    With an ``indices_tuple`` from a miner, the negatives of anchor ``a`` are exactly the
    ``(a2, n)`` pairs with ``a2 == a``, each counted as often as it appears in the tuple
    (PML's behaviour; a triplet tuple ``(a, p, n)`` therefore weights negative ``n`` by the
    number of triplets it occurs in).

    Deviation from PML: PML evaluates ``-log(ratio + tiny)``, which caps a pair's loss at
    ``-log(tiny)`` (about 87 in float32) when the ratio underflows; here the exact value is
    returned. The two agree whenever the loss is below that cap.

    Args:
        temperature: the softmax temperature ``T`` (> 0).
        distance: CosineSimilarity by default.
        reducer: MeanReducer by default (over positive pairs).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.ntxent_loss import NTXentLoss
        >>> loss_fn = NTXentLoss(temperature=0.1)
        >>> view1, view2 = torch.randn(8, 16), torch.randn(8, 16)
        >>> ids = torch.arange(8)
        >>> loss = loss_fn(torch.cat([view1, view2]), torch.cat([ids, ids]))
    """

    def __init__(
        self,
        temperature: float = 0.07,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("temperature", temperature, low=0, low_inclusive=False)
        super().__init__(
            mat_based_loss=False,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.temperature = temperature
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        if indices_tuple is None:
            return self._loss_from_labels(embeddings, labels, ref_emb, ref_labels)
        return self._loss_from_tuple(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def _logits(self, embeddings, ref_emb) -> torch.Tensor:
        """``s / T`` in the accumulation dtype; a distance is negated into a similarity."""
        mat = self.distance(embeddings, ref_emb)
        x = mat.to(c_f.accumulation_dtype(mat.dtype))
        return x / (self.temperature if self.distance.is_inverted else -self.temperature)

    def _loss_from_labels(self, embeddings, labels, ref_emb, ref_labels):
        if not self._has_pairs(labels, ref_labels):
            return self.zero_losses()
        pos, neg = pos_neg_masks(labels, ref_labels)
        logits = self._logits(embeddings, ref_emb)
        # An anchor without negatives gets -inf here and its pairs a loss of exactly 0, as in
        # PML; masked_fill keeps the gradient of those rows at 0 (not NaN).
        lse_neg = torch.logsumexp(logits.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)
        fused = self.fused_reduction("loss")
        if fused is not None:
            losses = info_nce_terms(logits, lse_neg)
            total, count = fused.partial(losses, pos)
            return {"loss": fused.loss_entry(total, count, embeddings)}
        # Without a fused reducer the pairs are listed (torch.where waits for the device
        # anyway); the read after it finds the device idle. PML's zero-loss rule.
        a1, p = torch.where(pos)
        if len(a1) == 0 or not bool(neg.any()):
            return self.zero_losses()
        losses = info_nce_terms(logits[a1, p], lse_neg[a1, 0])
        return self._pair_losses(losses, a1, p, embeddings)

    def _loss_from_tuple(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        a1, p, a2, n = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if all(len(x) <= 1 for x in (a1, p, a2, n)) or len(a1) == 0 or len(a2) == 0:
            return self.zero_losses()
        logits = self._logits(embeddings, ref_emb)
        num_ref = logits.shape[1]
        # How often each (anchor, negative) pair occurs in the tuple: its weight in the sum.
        counts = torch.bincount(a2.long() * num_ref + n.long(), minlength=logits.numel())
        counts = counts.view_as(logits)
        weighted = logits + counts.clamp(min=1).to(logits.dtype).log()
        lse_neg = torch.logsumexp(weighted.masked_fill(counts == 0, float("-inf")), dim=1)
        losses = info_nce_terms(logits[a1, p], lse_neg[a1])
        return self._pair_losses(losses, a1, p, embeddings)

    @staticmethod
    def _pair_losses(losses, a1, p, embeddings):
        return {
            "loss": {
                "losses": losses.to(embeddings.dtype),
                "indices": (a1, p),
                "reduction_type": "pos_pair",
            }
        }
