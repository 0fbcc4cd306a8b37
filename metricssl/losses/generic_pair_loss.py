"""GenericPairLoss: the base of losses defined on positive and negative pairs."""

from __future__ import annotations

import torch

from ..core import loss_and_miner_utils as lmu
from ..core.pair_masks import pos_neg_masks
from ..core.validation import ArgumentError
from .base_metric_loss_function import (
    BaseMetricLossFunction,
    require_labels_or_indices_tuple,
    require_ref_labels,
)


class GenericPairLoss(BaseMetricLossFunction):
    """A loss over pairs, computed either from the whole matrix or from the pair values.

    Subclasses implement ``_compute_loss``:

    - ``mat_based_loss=True``: ``_compute_loss(mat, pos_mask, neg_mask)`` with float masks of
      the matrix's shape (1 where the pair is used);
    - ``mat_based_loss=False``: ``_compute_loss(pos_pair, neg_pair, indices_tuple)`` with the
      1D tensors of positive and negative pair values.

    Without an ``indices_tuple`` the masks come straight from the labels (PML first lists
    every pair as indices and scatters them back into masks; the result is the same).
    """

    def __init__(self, mat_based_loss: bool, **kwargs):
        super().__init__(**kwargs)
        self.mat_based = bool(mat_based_loss)
        self.loss_method = self.mat_based_loss if mat_based_loss else self.pair_based_loss

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        name = type(self).__name__
        require_labels_or_indices_tuple(labels, indices_tuple, name)
        require_ref_labels(labels, embeddings, ref_emb, ref_labels, indices_tuple, name)
        if indices_tuple is None and self.mat_based and self._has_pairs(labels, ref_labels):
            mat = self.distance(embeddings, ref_emb)
            pos, neg = pos_neg_masks(labels, ref_labels)
            return self._compute_loss(mat, pos.to(mat.dtype), neg.to(mat.dtype))
        indices_tuple = lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
        if all(len(x) <= 1 for x in indices_tuple):
            return self.zero_losses()
        mat = self.distance(embeddings, ref_emb)
        return self.loss_method(mat, indices_tuple)

    @staticmethod
    def _has_pairs(labels, ref_labels) -> bool:
        """False only where PML would find at most one positive and one negative pair.

        With n x m candidate pairs that can only happen for tiny batches, so the exact count
        (a host sync) is taken only there.
        """
        n, m = labels.shape[0], (labels if ref_labels is None else ref_labels).shape[0]
        if n * m > 4:
            return True
        pos, neg = pos_neg_masks(labels, ref_labels)
        return bool(pos.sum() > 1 or neg.sum() > 1)

    def _compute_loss(self, *args):
        raise NotImplementedError

    def mat_based_loss(self, mat, indices_tuple):
        a1, p, a2, n = indices_tuple
        pos_mask, neg_mask = torch.zeros_like(mat), torch.zeros_like(mat)
        pos_mask[a1, p] = 1
        neg_mask[a2, n] = 1
        self._assert_either_pos_or_neg(pos_mask, neg_mask)
        return self._compute_loss(mat, pos_mask, neg_mask)

    def pair_based_loss(self, mat, indices_tuple):
        a1, p, a2, n = indices_tuple
        pos_pair = mat[a1, p] if len(a1) > 0 else []
        neg_pair = mat[a2, n] if len(a2) > 0 else []
        return self._compute_loss(pos_pair, neg_pair, indices_tuple)

    @staticmethod
    def _assert_either_pos_or_neg(pos_mask, neg_mask):
        if torch.any((pos_mask != 0) & (neg_mask != 0)):
            raise ArgumentError("indices_tuple: a pair cannot be both positive and negative")
