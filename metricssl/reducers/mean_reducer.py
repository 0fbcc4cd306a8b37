"""MeanReducer: the mean of all per-element losses."""

from __future__ import annotations

import torch

from .base_reducer import BaseReducer
from .fused import FusedReduction


class MeanReducer(BaseReducer):
    """Average of every element, pair or triplet loss.

    Example:
        >>> from metricssl import losses, reducers
        >>> loss_fn = losses.TripletMarginLoss(reducer=reducers.MeanReducer())
    """

    def element_reduction(self, losses, *_):
        return torch.mean(losses)

    def pos_pair_reduction(self, losses, *args):
        return self.element_reduction(losses, *args)

    def neg_pair_reduction(self, losses, *args):
        return self.element_reduction(losses, *args)

    def triplet_reduction(self, losses, *args):
        return self.element_reduction(losses, *args)

    fusable = True

    def fused_rule(self):
        return FusedReduction(mean=True)
