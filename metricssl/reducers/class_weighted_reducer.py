"""ClassWeightedReducer: the mean of losses weighted by the anchor's class."""

from __future__ import annotations

import torch

from ..core import common as c_f
from .base_reducer import BaseReducer


class ClassWeightedReducer(BaseReducer):
    """``mean(losses * weights[labels[anchor]])``.

    Args:
        weights: a 1D tensor with a weight per class id.
    """

    def __init__(self, weights: torch.Tensor, collect_stats: bool | None = None):
        super().__init__(collect_stats=collect_stats)
        if not torch.is_tensor(weights) or weights.ndim != 1:
            raise TypeError("weights must be a 1D tensor with one weight per class")
        self.weights = weights

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, loss_indices, labels)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, loss_indices[0], labels)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, loss_indices[0], labels)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, loss_indices[0], labels)

    def element_reduction_helper(self, losses, indices, labels):
        if labels is None:
            raise ValueError("ClassWeightedReducer needs labels")
        self.weights = c_f.to_device(self.weights, losses, dtype=losses.dtype)
        return torch.mean(losses * self.weights[labels[indices]])
