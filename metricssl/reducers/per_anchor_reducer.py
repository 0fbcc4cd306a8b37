"""PerAnchorReducer: average pair losses per anchor, then reduce the per-anchor values."""

from __future__ import annotations

import torch

from ..core import common as c_f
from .base_reducer import BaseReducer
from .mean_reducer import MeanReducer


def aggregation_func(x: torch.Tensor, num_per_row: torch.Tensor) -> torch.Tensor:
    """Row sums over counts; rows with no pair give 0."""
    out = torch.sum(x, dim=1) / num_per_row
    return torch.where(num_per_row == 0, torch.zeros_like(out), out)


class PerAnchorReducer(BaseReducer):
    """Collects the pair losses of each anchor into a row, aggregates each row, and hands the
    per-anchor values to ``reducer`` as element losses.

    Args:
        reducer: reduces the per-anchor values (MeanReducer by default).
        aggregation_func: ``f(rows, num_per_row) -> per-anchor values``.
    """

    def __init__(
        self,
        reducer: BaseReducer | None = None,
        aggregation_func=aggregation_func,
        collect_stats: bool | None = None,
    ):
        super().__init__(collect_stats=collect_stats)
        self.reducer = MeanReducer() if reducer is None else reducer
        self.aggregation_func = aggregation_func

    def element_reduction(self, losses, loss_indices, embeddings, labels):
        loss_dict = {
            "loss": {"losses": losses, "indices": loss_indices, "reduction_type": "element"}
        }
        return self.reducer(loss_dict, embeddings, labels)

    def tuple_reduction_helper(self, losses, loss_indices, embeddings, labels):
        batch_size = embeddings.shape[0]
        anchors, others = loss_indices
        rows = losses.new_zeros(batch_size, batch_size)
        filled = torch.zeros(batch_size, batch_size, dtype=torch.bool, device=losses.device)
        rows[anchors, others] = losses
        filled[anchors, others] = True
        output = self.aggregation_func(rows, filled.sum(dim=1))
        loss_dict = {
            "loss": {
                "losses": output,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }
        return self.reducer(loss_dict, embeddings, labels)

    def pos_pair_reduction(self, *args, **kwargs):
        return self.tuple_reduction_helper(*args, **kwargs)

    def neg_pair_reduction(self, *args, **kwargs):
        return self.tuple_reduction_helper(*args, **kwargs)

    def triplet_reduction(self, *args, **kwargs):
        raise NotImplementedError("PerAnchorReducer does not reduce triplet losses")
