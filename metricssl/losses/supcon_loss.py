"""SupConLoss: supervised contrastive loss, one value per anchor."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import is_self_reference, pos_neg_masks
from ..core.validation import ArgumentError, check_number
from ..distances import BaseDistance, CosineSimilarity
from ..reducers import AvgNonZeroReducer, BaseReducer, ClassWeightedReducer, MultipleReducers
from .base_metric_loss_function import require_ref_labels
from .generic_pair_loss import GenericPairLoss


class SupConLoss(GenericPairLoss):
    """Supervised contrastive loss (PML's ``SupConLoss``).

    Khosla, Teterwak, Wang, Sarna, Tian, Isola, Maschinot, Liu and Krishnan, "Supervised
    Contrastive Learning", NeurIPS 2020. For anchor ``i`` with similarities ``s`` and
    temperature ``T``, over its positives ``P(i)`` and all its other pairs ``A(i)``
    (positives and negatives; never ``i`` itself)::

        loss(i) = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip/T) / sum_{a in A(i)} exp(s_ia/T) )

    For a distance (not inverted) the negated distance is the similarity, as in PML. Anchors
    without positives get 0, and the default AvgNonZeroReducer leaves them out of the mean.
    The log-softmax is taken row by row over the query-by-reference matrix (O(N^2) memory),
    in float32 for half-precision inputs; the loss comes back in the input dtype.

    Multi-label (not in PML): ``labels`` may also be a multi-hot ``(N, C)`` matrix of 0/1
    (bool, integer or float), one column per class. Two samples are positives when they
    share at least one class and negatives when they share none (a row of zeros is a
    negative of every sample). ``ref_labels`` must then be an ``(M, C)`` matrix too. A
    matrix with a single 1 per row gives exactly the 1-D result. ClassWeightedReducer, which
    indexes weights by a class id, needs 1-D labels.

    Args:
        temperature: the softmax temperature ``T`` (> 0).
        distance: CosineSimilarity by default.
        reducer: AvgNonZeroReducer by default (over anchors).
        embedding_regularizer, embedding_reg_weight, collect_stats: as in every loss.

    Example:
        >>> import torch
        >>> from metricssl.losses.supcon_loss import SupConLoss
        >>> loss_fn = SupConLoss(temperature=0.1)
        >>> loss = loss_fn(torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    """

    def __init__(
        self,
        temperature: float = 0.1,
        distance: BaseDistance | None = None,
        reducer: BaseReducer | None = None,
        embedding_regularizer=None,
        embedding_reg_weight: float = 1,
        collect_stats: bool | None = None,
    ):
        check_number("temperature", temperature, low=0, low_inclusive=False)
        super().__init__(
            mat_based_loss=True,
            distance=distance,
            reducer=reducer,
            embedding_regularizer=embedding_regularizer,
            embedding_reg_weight=embedding_reg_weight,
            collect_stats=collect_stats,
        )
        self.temperature = temperature
        self.add_to_recordable_attributes(list_of_names=["temperature"], is_stat=False)

    def check_inputs(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        """The base checks, plus multi-hot ``(N, C)`` labels (the base accepts only 1-D)."""
        if not (torch.is_tensor(labels) and labels.ndim == 2):
            return super().check_inputs(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        given_ref = ref_emb is not None
        # The base validates everything but the labels; they are checked here.
        embeddings, _, indices_tuple, ref_emb, _ = super().check_inputs(
            embeddings, None, indices_tuple, ref_emb, None
        )
        _check_multi_hot(labels, embeddings.shape[0], "labels", "embeddings")
        labels = c_f.to_device(labels, embeddings)
        if not given_ref:
            if ref_labels is not None:
                raise ArgumentError("ref_labels was given without ref_emb")
            ref_labels = labels
        elif ref_labels is not None:
            _check_multi_hot(ref_labels, ref_emb.shape[0], "ref_labels", "ref_emb")
            if ref_labels.shape[1] != labels.shape[1]:
                raise ArgumentError(
                    f"ref_labels has {ref_labels.shape[1]} classes but labels has {labels.shape[1]}"
                )
            ref_labels = c_f.to_device(ref_labels, ref_emb)
        reducers = (
            list(self.reducer.reducers.values()) + [self.reducer.default_reducer]
            if isinstance(self.reducer, MultipleReducers)
            else [self.reducer]
        )
        if any(isinstance(r, ClassWeightedReducer) for r in reducers):
            raise ArgumentError("ClassWeightedReducer needs 1-D labels (class ids), not multi-hot")
        return embeddings, labels, indices_tuple, ref_emb, ref_labels

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if indices_tuple is not None or labels is None:
            return super().compute_loss(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        # From labels, the bool masks go straight in (GenericPairLoss would make float copies).
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, None, type(self).__name__)
        if labels.ndim == 2:
            pos, neg = _multi_hot_masks(labels, ref_labels)
            # As for 1-D labels (PML's rule): zero with at most one pair of each kind, which
            # only tiny batches can have.
            if pos.numel() <= 4 and pos.sum() <= 1 and neg.sum() <= 1:
                return self.zero_losses()
            return self._supcon(self.distance(embeddings, ref_emb), pos, neg)
        if not self._has_pairs(labels, ref_labels):
            return self.zero_losses()
        pos, neg = pos_neg_masks(labels, ref_labels)
        return self._supcon(self.distance(embeddings, ref_emb), pos, neg)

    def _compute_loss(self, mat, pos_mask, neg_mask):
        return self._supcon(mat, pos_mask.bool(), neg_mask.bool())

    def _supcon(self, mat, pos, neg):
        # PML gives a zero loss unless the batch has at least one positive and one negative.
        # One host read for both (each is a device synchronisation on CUDA).
        if not bool(pos.any() & neg.any()):
            return self.zero_losses()
        x = mat.to(c_f.accumulation_dtype(mat.dtype))
        x = x / (self.temperature if self.distance.is_inverted else -self.temperature)
        log_denominator = lmu.logsumexp(x, keep_mask=pos | neg, add_one=False, dim=1)
        log_prob = x - log_denominator
        log_prob.masked_fill_(~pos, 0)  # in place: one N x M buffer less
        num_pos = pos.sum(dim=1)
        mean_log_prob_pos = log_prob.sum(dim=1) / num_pos.clamp(min=1).to(x.dtype)
        return {
            "loss": {
                "losses": (-mean_log_prob_pos).to(mat.dtype),
                "indices": c_f.torch_arange_from_size(mat),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self) -> BaseReducer:
        return AvgNonZeroReducer()

    def get_default_distance(self) -> BaseDistance:
        return CosineSimilarity()


def _check_multi_hot(labels, n: int, name: str, embeddings_name: str) -> None:
    if not torch.is_tensor(labels):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ArgumentError(
            f"multi-hot {name} must be a 2D tensor of shape (batch_size, num_classes), got "
            f"shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != n:
        raise ArgumentError(f"{name} has {labels.shape[0]} rows but {embeddings_name} has {n}")
    if labels.is_complex():
        raise TypeError(f"multi-hot {name} must be bool, integer or float, got {labels.dtype}")
    # A host read for float/int multi-hot labels only: bad values must raise here.
    if labels.dtype != torch.bool and not bool(((labels == 0) | (labels == 1)).all()):
        raise ArgumentError(f"multi-hot {name} must hold only 0 and 1")


def _multi_hot_masks(labels: torch.Tensor, ref_labels: torch.Tensor):
    """(pos, neg) bool masks: positives share at least one class, negatives share none.

    The diagonal is dropped from both when the reference set is the query set itself (a
    row of zeros shares no class with itself, yet is no negative of itself).
    """
    shared = (labels.float() @ ref_labels.float().T) > 0
    pos, neg = shared, ~shared
    if is_self_reference(labels, ref_labels):
        pos.fill_diagonal_(False)
        neg.fill_diagonal_(False)
    return pos, neg
