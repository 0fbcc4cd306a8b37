"""LpRegularizer: penalises the L_p norm of each embedding."""

from __future__ import annotations

import torch

from ..core import common as c_f
from ..core.validation import check_number
from .base_regularizer import BaseRegularizer


class LpRegularizer(BaseRegularizer):
    """Mean (by default) of ``||x_i||_p ** power`` over the rows.

    Example:
        >>> from metricssl import losses, regularizers
        >>> loss_fn = losses.ContrastiveLoss(embedding_regularizer=regularizers.LpRegularizer())
    """

    def __init__(
        self, p: float = 2, power: float = 1, distance=None, reducer=None, collect_stats=None
    ):
        check_number("p", p, low=0, low_inclusive=False)
        check_number("power", power)
        super().__init__(distance=distance, reducer=reducer, collect_stats=collect_stats)
        self.p, self.power = p, power
        self.add_to_recordable_attributes(list_of_names=["p", "power"], is_stat=False)

    def compute_loss(self, embeddings):
        reg = torch.norm(embeddings, p=self.p, dim=1)
        if self.power != 1:
            reg = reg**self.power
        return {
            "loss": {
                "losses": reg,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
