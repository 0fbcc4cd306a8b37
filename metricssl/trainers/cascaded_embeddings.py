"""``CascadedEmbeddings``: one metric loss (and classifier) per slice of the embedding."""

from __future__ import annotations

from ..miners import HDCMiner
from ..utils import common_functions as c_f
from .base_trainer import BaseTrainer


class CascadedEmbeddings(BaseTrainer):
    """The embedding is cut into consecutive slices of ``embedding_sizes``; slice ``i`` gets
    ``loss_funcs["metric_loss_i"]`` with the tuples of ``mining_funcs["tuple_miner_i"]`` (an
    :class:`~metricssl.miners.HDCMiner` is first restricted to the previous slice's tuples)
    and, when ``models["classifier_i"]`` exists, ``loss_funcs["classifier_loss_i"]`` on its
    logits. A loss runs only when its weight is positive.

    Args:
        embedding_sizes: the width of each slice, in order.
        *args, **kwargs: :class:`BaseTrainer`'s.

    Example:
        >>> import torch
        >>> from metricssl import losses
        >>> from metricssl.trainers import CascadedEmbeddings
        >>> data = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.arange(32) % 4)
        >>> trunk = torch.nn.Linear(8, 6)
        >>> trainer = CascadedEmbeddings(
        ...     embedding_sizes=[2, 4],
        ...     models={"trunk": trunk},
        ...     optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        ...     batch_size=16,
        ...     loss_funcs={
        ...         "metric_loss_0": losses.ContrastiveLoss(),
        ...         "metric_loss_1": losses.TripletMarginLoss(),
        ...     },
        ...     dataset=data,
        ...     dataloader_num_workers=0,
        ...     data_device="cpu",
        ... )
        >>> trainer.train()
        >>> sorted(trainer.losses)
        ['metric_loss_0', 'metric_loss_1', 'total_loss']
    """

    def __init__(self, embedding_sizes, *args, **kwargs):
        if not c_f.is_list_or_tuple(embedding_sizes) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in embedding_sizes
        ):
            raise TypeError(
                f"embedding_sizes must be a list of positive ints, got {embedding_sizes!r}"
            )
        super().__init__(*args, **kwargs)
        self.embedding_sizes = embedding_sizes

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        start = 0
        logits = []
        indices_tuple = None
        for i, size in enumerate(self.embedding_sizes):
            loss_name = f"metric_loss_{i}"
            piece = embeddings[:, start : start + size]
            indices_tuple = self.maybe_mine_embeddings(
                piece, labels, indices_tuple, f"tuple_miner_{i}"
            )
            self.losses[loss_name] += self.maybe_get_metric_loss(
                piece, labels, indices_tuple, loss_name
            )
            logits.append(self.maybe_get_logits(piece, f"classifier_{i}"))
            start += size
        for i, piece_logits in enumerate(logits):
            if piece_logits is None:
                continue
            loss_name = f"classifier_loss_{i}"
            self.losses[loss_name] += self.maybe_get_classifier_loss(
                piece_logits, labels, loss_name
            )

    def maybe_get_metric_loss(self, embeddings, labels, indices_tuple, curr_loss_name):
        if self.loss_weights.get(curr_loss_name, 0) > 0:
            return self.loss_funcs[curr_loss_name](embeddings, labels, indices_tuple)
        return 0

    def maybe_mine_embeddings(self, embeddings, labels, prev_indices_tuple, curr_miner_name):
        if curr_miner_name not in self.mining_funcs:
            return None
        miner = self.mining_funcs[curr_miner_name]
        if isinstance(miner, HDCMiner):
            miner.set_idx_externally(prev_indices_tuple, labels)
            indices_tuple = miner(embeddings, labels)
            miner.reset_idx()
            return indices_tuple
        return miner(embeddings, labels)

    def maybe_get_logits(self, embeddings, curr_classifier_name):
        if self.models.get(curr_classifier_name):
            return self.models[curr_classifier_name](embeddings)
        return None

    def maybe_get_classifier_loss(self, logits, labels, curr_loss_name):
        if self.loss_weights.get(curr_loss_name, 0) > 0:
            return self.loss_funcs[curr_loss_name](logits, c_f.to_device(labels, logits))
        return 0

    def modify_schema(self):
        self.schema["models"].keys += ["classifier_[0-9]+"]
        self.schema["loss_funcs"].keys = ["metric_loss_[0-9]+", "classifier_loss_[0-9]+"]
        self.schema["mining_funcs"].keys = ["tuple_miner_[0-9]+"]
