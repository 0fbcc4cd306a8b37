"""SumReducer: the sum of all per-element losses."""

from __future__ import annotations

import torch

from .fused import FusedReduction
from .mean_reducer import MeanReducer


class SumReducer(MeanReducer):
    """Sum of every element, pair or triplet loss."""

    def element_reduction(self, losses, *_):
        return torch.sum(losses)

    fusable = True

    def fused_rule(self):
        return FusedReduction(mean=False)
