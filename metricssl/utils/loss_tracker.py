"""PML's ``LossTracker`` (``pytorch_metric_learning.utils.loss_tracker``): the trainers' losses,
their weights and the weighted total."""

from __future__ import annotations


class LossTracker:
    """Holds ``losses`` and ``loss_weights`` by name, with a ``"total_loss"`` entry.

    ``update(weights)`` sets the weights (1.0 for a name not in ``weights``), multiplies each
    loss by its weight, and sets ``losses["total_loss"]`` to the sum of the weighted losses.
    As in PML, ``"total_loss"`` is appended to the ``loss_names`` list passed in (the caller's
    list is modified), and ``losses`` is the dictionary a trainer fills in place.

    Args:
        loss_names: the names of the losses.

    Example:
        >>> from metricssl.utils.loss_tracker import LossTracker
        >>> tracker = LossTracker(["metric_loss", "classifier_loss"])
        >>> tracker.losses.update(metric_loss=2.0, classifier_loss=3.0)
        >>> tracker.update({"classifier_loss": 0.5})
        >>> tracker.losses["total_loss"]
        3.5
    """

    def __init__(self, loss_names: list[str]):
        if "total_loss" not in loss_names:
            loss_names.append("total_loss")
        self.losses = dict.fromkeys(loss_names, 0)
        self.loss_weights = dict.fromkeys(loss_names, 1)

    def weight_the_losses(self, exclude_loss=("total_loss",)) -> None:
        for name in self.losses:
            if name not in exclude_loss:
                self.losses[name] *= self.loss_weights[name]

    def get_total_loss(self, exclude_loss=("total_loss",)) -> None:
        # PML starts from 0 and adds in dictionary order; a tensor total keeps its graph.
        self.losses["total_loss"] = 0
        for name, value in self.losses.items():
            if name not in exclude_loss:
                self.losses["total_loss"] += value

    def set_loss_weights(self, loss_weight_dict: dict) -> None:
        for name in self.losses:
            self.loss_weights[name] = loss_weight_dict.get(name, 1.0)

    def update(self, loss_weight_dict: dict) -> None:
        self.set_loss_weights(loss_weight_dict)
        self.weight_the_losses()
        self.get_total_loss()
