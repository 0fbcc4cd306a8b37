"""DoNothingReducer: hands the loss dictionary back unreduced."""

from __future__ import annotations

from .base_reducer import BaseReducer


class DoNothingReducer(BaseReducer):
    """Returns the loss dictionary itself, for users who reduce it their own way."""

    def forward(self, loss_dict, embeddings, labels):
        return loss_dict
