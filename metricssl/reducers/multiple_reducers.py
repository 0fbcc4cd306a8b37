"""MultipleReducers: one reducer per sub-loss, then the sum of the sub-losses."""

from __future__ import annotations

import torch

from .base_reducer import BaseReducer
from .mean_reducer import MeanReducer


class MultipleReducers(BaseReducer):
    """Reduces each entry of the loss dictionary with its own reducer and sums the results.

    Args:
        reducers: ``{sub_loss_name: reducer}``.
        default_reducer: for sub-losses not in ``reducers`` (MeanReducer by default).
    """

    def __init__(
        self,
        reducers: dict[str, BaseReducer],
        default_reducer: BaseReducer | None = None,
        collect_stats: bool | None = None,
    ):
        super().__init__(collect_stats=collect_stats)
        self.reducers = torch.nn.ModuleDict(reducers)
        self.default_reducer = MeanReducer() if default_reducer is None else default_reducer

    def reducer_for(self, loss_name: str) -> BaseReducer:
        return self.reducers[loss_name] if loss_name in self.reducers else self.default_reducer

    def forward(self, loss_dict, embeddings, labels):
        self.reset_stats()
        values = [
            self.reducer_for(name)({name: info}, embeddings, labels)
            for name, info in loss_dict.items()
        ]
        sub_losses = torch.stack([v.to(embeddings.dtype).reshape(()) for v in values])
        return self.sub_loss_reduction(sub_losses, embeddings, labels)

    def sub_loss_reduction(self, sub_losses, embeddings=None, labels=None):
        return torch.sum(sub_losses)
