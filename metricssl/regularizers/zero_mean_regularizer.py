"""ZeroMeanRegularizer: pushes the entries of each row to sum to zero."""

from __future__ import annotations

import torch

from ..core import common as c_f
from .base_regularizer import BaseRegularizer


class ZeroMeanRegularizer(BaseRegularizer):
    """``|sum_j x_ij|`` for every row ``i``, averaged by the default reducer.

    From Roth, Vinod and Brattoli, "MIC: Mining Interclass Characteristics for Improved
    Metric Learning", ICCV 2019, which keeps the class-independent embedding of each sample
    centred. It can regularize embeddings or a loss's weights.

    Example:
        >>> import torch
        >>> from metricssl.losses import ContrastiveLoss
        >>> from metricssl.regularizers.zero_mean_regularizer import ZeroMeanRegularizer
        >>> loss_fn = ContrastiveLoss(embedding_regularizer=ZeroMeanRegularizer())
        >>> ZeroMeanRegularizer()(torch.tensor([[1.0, -3.0], [2.0, 2.0]]))
        tensor(3.)

    Args:
        distance: unused by the penalty; kept for PML's interface.
        reducer: reduces the per-row penalties (MeanReducer by default).
        collect_stats: record per-call statistics.
    """

    def __init__(self, distance=None, reducer=None, collect_stats: bool | None = None):
        super().__init__(distance=distance, reducer=reducer, collect_stats=collect_stats)

    def compute_loss(self, embeddings):
        # Half inputs: add up in fp32 so long rows do not lose the small residual sum.
        acc = c_f.accumulation_dtype(embeddings.dtype)
        if embeddings.dtype == acc:  # the common case: no casts (2 of this 50 us call)
            losses = torch.abs(torch.sum(embeddings, dim=1))
        else:
            losses = torch.abs(torch.sum(embeddings.to(acc), dim=1)).to(embeddings.dtype)
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
