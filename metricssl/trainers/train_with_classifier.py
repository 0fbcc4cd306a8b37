"""``TrainWithClassifier``: a metric loss plus a classification loss on a classifier head."""

from __future__ import annotations

from ..utils import common_functions as c_f
from .metric_loss_only import MetricLossOnly


class TrainWithClassifier(MetricLossOnly):
    """:class:`MetricLossOnly` plus ``losses["classifier_loss"] =
    loss_funcs["classifier_loss"](models["classifier"](embeddings), labels)`` when a classifier
    is given and its loss weight is positive. Accepts the keys ``"classifier"`` (models) and
    ``"classifier_loss"`` (loss_funcs).

    Example:
        >>> import torch
        >>> from metricssl import losses
        >>> from metricssl.trainers import TrainWithClassifier
        >>> data = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.arange(32) % 4)
        >>> models = {"trunk": torch.nn.Linear(8, 4), "classifier": torch.nn.Linear(4, 4)}
        >>> trainer = TrainWithClassifier(
        ...     models=models,
        ...     optimizers={
        ...         f"{k}_optimizer": torch.optim.SGD(m.parameters(), lr=0.1)
        ...         for k, m in models.items()
        ...     },
        ...     batch_size=16,
        ...     loss_funcs={
        ...         "metric_loss": losses.ContrastiveLoss(),
        ...         "classifier_loss": torch.nn.CrossEntropyLoss(),
        ...     },
        ...     dataset=data,
        ...     dataloader_num_workers=0,
        ...     data_device="cpu",
        ... )
        >>> trainer.train()
        >>> sorted(trainer.losses)
        ['classifier_loss', 'metric_loss', 'total_loss']
    """

    def calculate_loss(self, curr_batch):
        data, labels = curr_batch
        embeddings = self.compute_embeddings(data)
        logits = self.maybe_get_logits(embeddings)
        indices_tuple = self.maybe_mine_embeddings(embeddings, labels)
        self.losses["metric_loss"] = self.maybe_get_metric_loss(embeddings, labels, indices_tuple)
        self.losses["classifier_loss"] = self.maybe_get_classifier_loss(logits, labels)

    def maybe_get_classifier_loss(self, logits, labels):
        if logits is not None:
            return self.loss_funcs["classifier_loss"](logits, c_f.to_device(labels, logits))
        return 0

    def maybe_get_logits(self, embeddings):
        if self.models.get("classifier") and self.loss_weights.get("classifier_loss", 0) > 0:
            return self.models["classifier"](embeddings)
        return None

    def modify_schema(self):
        self.schema["models"].keys += ["classifier"]
        self.schema["loss_funcs"].keys += ["classifier_loss"]
