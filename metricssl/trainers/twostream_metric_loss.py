"""``TwoStreamMetricLoss``: anchors and positives/negatives from two streams of one dataset."""

from __future__ import annotations

import torch

from ..utils import common_functions as c_f
from ..utils import loss_and_miner_utils as lmu
from .base_trainer import BaseTrainer


class TwoStreamMetricLoss(BaseTrainer):
    """For datasets whose items are ``(anchor, posneg, label)``: both streams are embedded,
    the tuples pair anchors (queries) with posnegs (references) -- from
    ``mining_funcs["tuple_miner"](anchors, labels, posnegs, labels)`` or, without a miner, all
    triplets -- and ``loss_funcs["metric_loss"]`` runs on the concatenated embeddings with the
    reference indices shifted by the batch size. Arguments are :class:`BaseTrainer`'s.

    Example:
        >>> import torch
        >>> from metricssl import losses
        >>> from metricssl.trainers import TwoStreamMetricLoss
        >>> class Pairs(torch.utils.data.Dataset):
        ...     def __len__(self):
        ...         return 32
        ...     def __getitem__(self, i):
        ...         return torch.randn(8), torch.randn(8), i % 4
        >>> trunk = torch.nn.Linear(8, 4)
        >>> trainer = TwoStreamMetricLoss(
        ...     models={"trunk": trunk},
        ...     optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        ...     batch_size=16,
        ...     loss_funcs={"metric_loss": losses.TripletMarginLoss()},
        ...     dataset=Pairs(),
        ...     dataloader_num_workers=0,
        ...     data_device="cpu",
        ... )
        >>> trainer.train()
        >>> trainer.iteration
        1
    """

    def calculate_loss(self, curr_batch):
        (anchors, posnegs), labels = curr_batch
        embeddings = (self.compute_embeddings(anchors), self.compute_embeddings(posnegs))
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)

    def get_batch(self):
        self.dataloader_iter, batch = c_f.try_next_on_generator(
            self.dataloader_iter, self.dataloader
        )
        anchors, posnegs, labels = self.data_and_label_getter(batch)
        labels = c_f.process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return self.maybe_do_batch_mining((anchors, posnegs), labels)

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple):
        if self.loss_weights.get("metric_loss", 0) > 0:
            indices_tuple = c_f.shift_indices_tuple(indices_tuple, embeddings[0].shape[0])
            return self.loss_funcs["metric_loss"](
                torch.cat(embeddings, dim=0), torch.cat([labels, labels], dim=0), indices_tuple
            )
        return 0

    def maybe_mine_embeddings(self, embeddings, labels):
        # The labels go in twice (as query and reference labels) so that every tuple pairs an
        # anchor with a posneg; a clone, as the miner may treat the same object as "no ref".
        if "tuple_miner" in self.mining_funcs:
            anchors, posnegs = embeddings
            return self.mining_funcs["tuple_miner"](anchors, labels, posnegs, labels.clone())
        labels = labels.to(embeddings[0].device)
        return lmu.get_all_triplets_indices(labels, labels.clone())

    def modify_schema(self):
        self.schema["mining_funcs"].keys = ["tuple_miner"]
