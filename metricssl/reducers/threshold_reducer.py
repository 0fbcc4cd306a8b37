"""ThresholdReducer: the mean of the losses inside (low, high)."""

from __future__ import annotations

import torch

from ..core.validation import ArgumentError, check_number
from .base_reducer import BaseReducer
from .fused import FusedReduction


class ThresholdReducer(BaseReducer):
    """Average of the losses strictly above ``low`` and strictly below ``high``.

    Args:
        low: lower bound (exclusive), or None.
        high: upper bound (exclusive), or None. At least one bound is required.
    """

    def __init__(
        self, low: float | None = None, high: float | None = None, collect_stats: bool | None = None
    ):
        super().__init__(collect_stats=collect_stats)
        if low is None and high is None:
            raise ArgumentError("ThresholdReducer needs at least one of low or high")
        check_number("low", low, allow_none=True)
        check_number("high", high, allow_none=True)
        self.low, self.high = low, high
        self.add_to_recordable_attributes(list_of_names=["low", "high"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["num_past_filter", "num_above_low", "num_below_high"], is_stat=True
        )

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, embeddings)

    def pos_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, embeddings)

    def neg_pair_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, embeddings)

    def triplet_reduction(self, losses, loss_indices, embeddings, labels):
        return self.element_reduction_helper(losses, embeddings)

    def element_reduction_helper(self, losses, embeddings):
        low_condition = high_condition = None
        if self.low is not None:
            low_condition = losses > self.low
            losses = losses[low_condition]
        if self.high is not None:
            high_condition = losses < self.high
            losses = losses[high_condition]
        num_past_filter = len(losses)
        loss = torch.mean(losses) if num_past_filter >= 1 else self.zero_loss(embeddings)
        if self.collect_stats:
            self.num_past_filter = num_past_filter
            if low_condition is not None:
                self.num_above_low = int(low_condition.sum())
            if high_condition is not None:
                self.num_below_high = int(high_condition.sum())
        return loss

    fusable = True

    def fused_rule(self):
        return FusedReduction(low=self.low, high=self.high, mean=True)
