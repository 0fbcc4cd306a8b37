"""AvgNonZeroReducer: the mean of the positive losses."""

from __future__ import annotations

from .threshold_reducer import ThresholdReducer


class AvgNonZeroReducer(ThresholdReducer):
    """Average of the losses greater than zero (PML's default for margin losses).

    Example:
        >>> from metricssl import losses, reducers
        >>> loss_fn = losses.ContrastiveLoss(reducer=reducers.AvgNonZeroReducer())
    """

    fusable = True

    def __init__(self, collect_stats: bool | None = None):
        super().__init__(low=0, collect_stats=collect_stats)
