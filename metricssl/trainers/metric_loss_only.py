"""``MetricLossOnly``: embeddings, an optional miner, one metric loss."""

from __future__ import annotations

from .base_trainer import BaseTrainer


class MetricLossOnly(BaseTrainer):
    """``losses["metric_loss"] = loss_funcs["metric_loss"](embeddings, labels, indices_tuple)``
    with ``indices_tuple`` from ``mining_funcs["tuple_miner"]`` when given. A zero
    ``loss_weights["metric_loss"]`` skips the loss. Arguments are :class:`BaseTrainer`'s (see
    its ``train`` example)."""

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple):
        if self.loss_weights.get("metric_loss", 0) > 0:
            return self.loss_funcs["metric_loss"](embeddings, labels, indices_tuple)
        return 0
