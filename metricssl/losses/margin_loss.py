"""MarginLoss: positives within beta - margin, negatives beyond beta + margin."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError, check_bool, check_number
from ..reducers import DivisorReducer, FusedReduction, MultipleReducers
from .base_metric_loss_function import (
    BaseMetricLossFunction,
    require_labels_or_indices_tuple,
    require_ref_labels,
)
from .triplet_margin_loss import check_triplets_per_anchor

# How a sub-loss is reduced on the fast path: PML's divisor, or a fused rule.
_DIVISOR = "divisor"


class MarginLoss(BaseMetricLossFunction):
    """Margin loss with a (learnable) boundary ``beta`` between positives and negatives.

    Wu, Manmatha, Smola and Krähenbühl, "Sampling Matters in Deep Embedding Learning",
    ICCV 2017. For each triplet (a, p, n)::

        relu(d(a, p) - beta + margin) + relu(beta - d(a, n) + margin)

    summed and divided by the number of non-zero terms (PML's DivisorReducer). With
    ``learn_beta`` beta is a ``torch.nn.Parameter`` (one per class when ``num_classes`` is
    given, indexed by the anchor's label) and ``nu * beta`` is added as a regulariser.

    Same arguments, values and gradients as PML's ``MarginLoss``. PML lists every triplet,
    O(N^3); but the (a, p) term occurs once per negative of a and the (a, n) term once per
    positive of a, so over all triplets (the default) the loss is computed from the pair
    matrix with per-anchor counts, in O(N^2). A miner's ``indices_tuple``, an int
    ``triplets_per_anchor`` or a reducer other than DivisorReducer, Mean/Sum or AvgNonZero
    gets PML's per-triplet losses.

    Args:
        margin: half the width of the band around beta.
        nu: weight of the beta regulariser (used when ``learn_beta``).
        beta: initial boundary between positive and negative distances.
        triplets_per_anchor: ``"all"``, or that many random triplets per anchor.
        learn_beta: make beta a learnable parameter.
        num_classes: one beta per class (labels must lie in ``[0, num_classes)``).
        distance, reducer, embedding_regularizer, embedding_reg_weight, collect_stats: as in
            :class:`~metricssl.losses.BaseMetricLossFunction` (DivisorReducer by default).

    Example:
        >>> import torch
        >>> from metricssl.losses.margin_loss import MarginLoss
        >>> loss_fn = MarginLoss(margin=0.2, nu=0.1, learn_beta=True, num_classes=4)
        >>> embeddings = torch.randn(32, 16, requires_grad=True)
        >>> labels = torch.randint(0, 4, (32,))
        >>> loss_fn(embeddings, labels).backward()
    """

    def __init__(
        self,
        margin: float = 0.2,
        nu: float = 0,
        beta: float = 1.2,
        triplets_per_anchor: int | str = "all",
        learn_beta: bool = False,
        num_classes: int | None = None,
        distance=None,
        reducer=None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("margin", margin)
        check_number("nu", nu)
        check_number("beta", beta)
        check_triplets_per_anchor(triplets_per_anchor)
        check_bool("learn_beta", learn_beta)
        check_number("num_classes", num_classes, low=1, integer=True, allow_none=True)
        super().__init__(
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.margin = margin
        self.nu = nu
        self.learn_beta = learn_beta
        self.initialize_beta(beta, num_classes)
        self.triplets_per_anchor = triplets_per_anchor
        self.add_to_recordable_attributes(list_of_names=["margin", "nu", "beta"], is_stat=False)

    def initialize_beta(self, beta, num_classes):
        self.beta = torch.tensor([float(beta)])
        if num_classes:
            self.beta = torch.ones(num_classes) * self.beta
        if self.learn_beta:
            self.beta = torch.nn.Parameter(self.beta)

    def get_default_reducer(self):
        return DivisorReducer()

    def _sub_loss_names(self):
        return ["margin_loss", "beta_reg_loss"]

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        if len(self.beta) > 1:
            self._check_class_labels(labels)
        if indices_tuple is None and self.triplets_per_anchor == "all":
            plan = self._fast_plan()
            if plan is not None:
                return self._all_triplets_from_pairs(plan, embeddings, labels, ref_emb, ref_labels)
        return self._listed_triplets(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def _check_class_labels(self, labels):
        if labels is None:
            raise ArgumentError("MarginLoss with num_classes needs labels (beta is per class)")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.beta)):
            raise ArgumentError(
                f"MarginLoss has num_classes={len(self.beta)} but labels lie in "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )

    def _beta(self, embeddings, dtype=None):
        return c_f.to_device(self.beta, device=embeddings.device, dtype=dtype or embeddings.dtype)

    # -- all triplets from pair sums ------------------------------------------------------------

    def _fast_plan(self):
        """How each sub-loss is reduced without listing triplets, or None if it can't be."""
        if type(self.reducer) is not MultipleReducers:
            return None
        margin_reducer = self.reducer.reducer_for("margin_loss")
        reg_reducer = self.reducer.reducer_for("beta_reg_loss")
        if type(margin_reducer) is DivisorReducer:
            margin_rule = _DIVISOR
        else:
            # A triplet's loss is a sum of two pair terms; counts decompose only for the
            # bounds "all triplets" and "non-zero triplets".
            margin_rule = margin_reducer.fused()
            if margin_rule is None or margin_rule.high is not None:
                return None
            if margin_rule.low is not None and margin_rule.low > 0:
                return None
        reg_rule = None
        if self.learn_beta and len(self.beta) > 1:
            # Per-class regulariser terms are per triplet; each anchor's terms are equal.
            reg_rule = _DIVISOR if type(reg_reducer) is DivisorReducer else reg_reducer.fused()
            if reg_rule is None:
                return None
        return margin_rule, reg_rule

    def _all_triplets_from_pairs(self, plan, embeddings, labels, ref_emb, ref_labels):
        margin_rule, reg_rule = plan
        mat = self.distance(embeddings, ref_emb)
        mat = mat.to(c_f.accumulation_dtype(mat.dtype))
        pos, neg = pos_neg_masks(labels, ref_labels)
        beta = self._beta(embeddings, mat.dtype)
        beta_a = beta[labels].unsqueeze(1) if len(beta) > 1 else beta
        pos_term = F.relu(self.distance.margin(mat, beta_a) + self.margin)
        neg_term = F.relu(self.distance.margin(beta_a, mat) + self.margin)
        n_pos = pos.sum(dim=1, keepdim=True)
        n_neg = neg.sum(dim=1, keepdim=True)
        # Over all triplets, the (a, p) term repeats once per negative of a, the (a, n) term
        # once per positive of a.
        pos_reps = torch.where(pos, n_neg, 0)
        neg_reps = torch.where(neg, n_pos, 0)
        per_anchor = (pos_term * pos_reps).sum(dim=1) + (neg_term * neg_reps).sum(dim=1)
        # PML's divisor: the non-zero pair terms, counted over triplets.
        pos_nonzero = torch.where(pos_term > 0, pos_reps, 0)
        neg_nonzero = torch.where(neg_term > 0, neg_reps, 0)
        divisor = pos_nonzero.sum() + neg_nonzero.sum()
        triplets_per_anchor = (n_pos * n_neg).squeeze(1)
        anchors = torch.arange(len(per_anchor), device=mat.device)

        if margin_rule == _DIVISOR:
            margin_entry = {
                "losses": per_anchor.to(embeddings.dtype),
                "indices": anchors,
                "reduction_type": "element",
                "divisor": divisor,
            }
        else:
            count = triplets_per_anchor.sum()
            if margin_rule.low is not None and margin_rule.low >= 0:
                # A triplet's loss is zero only when both of its terms are.
                pos_zero = (pos & (pos_term <= 0)).sum(dim=1)
                neg_zero = (neg & (neg_term <= 0)).sum(dim=1)
                count = count - (pos_zero * neg_zero).sum()
            margin_entry = margin_rule.loss_entry(per_anchor.sum(), count, embeddings)

        loss_dict = {"margin_loss": margin_entry}
        if not self.learn_beta:
            loss_dict["beta_reg_loss"] = self.zero_loss()
        elif len(self.beta) == 1:
            # PML adds nu * beta whenever there is at least one triplet.
            has_triplets = triplets_per_anchor.sum() > 0
            reg = self._beta(embeddings) * self.nu
            loss_dict["beta_reg_loss"] = {
                "losses": torch.where(has_triplets, reg, reg * 0),
                "indices": None,
                "reduction_type": "already_reduced",
            }
        else:
            reg_per_anchor = beta_a.squeeze(1) * self.nu
            loss_dict["beta_reg_loss"] = self._per_class_reg_entry(
                reg_rule, reg_per_anchor, triplets_per_anchor, anchors, divisor, embeddings
            )
        return loss_dict

    @staticmethod
    def _per_class_reg_entry(rule, reg, reps, anchors, divisor, embeddings):
        """nu * beta[label of a], once per triplet of anchor a, reduced by ``rule``."""
        if rule == _DIVISOR:
            return {
                "losses": (reg * reps).to(embeddings.dtype),
                "indices": anchors,
                "reduction_type": "element",
                "divisor": divisor,
            }
        fused: FusedReduction = rule
        keep = fused.keep_mask(reg)
        if keep is not None:
            reps = torch.where(keep, reps, 0)
        return fused.loss_entry((reg * reps).sum(), reps.sum(), embeddings)

    # -- listed triplets (PML's way) --------------------------------------------------------------

    def _listed_triplets(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        triplets = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, t_per_anchor=self.triplets_per_anchor
        )
        anchor_idx, positive_idx, negative_idx = triplets
        if len(anchor_idx) == 0:
            return self.zero_losses()
        beta = self._beta(embeddings)
        if len(beta) > 1:
            beta = beta[labels[anchor_idx]]
        mat = self.distance(embeddings, ref_emb)
        d_ap = mat[anchor_idx, positive_idx]
        d_an = mat[anchor_idx, negative_idx]
        pos_loss = F.relu(self.distance.margin(d_ap, beta) + self.margin)
        neg_loss = F.relu(self.distance.margin(beta, d_an) + self.margin)
        divisor = torch.sum(pos_loss > 0) + torch.sum(neg_loss > 0)
        return {
            "margin_loss": {
                "losses": pos_loss + neg_loss,
                "indices": triplets,
                "reduction_type": "triplet",
                "divisor": divisor,
            },
            "beta_reg_loss": self.compute_reg_loss(beta, anchor_idx, divisor),
        }

    def compute_reg_loss(self, beta, anchor_idx, divisor):
        """PML's regulariser entry for listed triplets: ``nu * beta`` (per anchor if per class)."""
        if not self.learn_beta:
            return self.zero_loss()
        if len(self.beta) == 1:
            return {"losses": beta * self.nu, "indices": None, "reduction_type": "already_reduced"}
        return {
            "losses": beta * self.nu,
            "indices": anchor_idx,
            "reduction_type": "element",
            "divisor": divisor,
        }
