"""Online linear probe: a linear classifier trained on detached features alongside any method.

As lightly's ``OnlineLinearClassifier`` and solo-learn's online classifier do, a linear layer
learns the classes from the encoder's features while the method trains, and its accuracy on
the held-out split tells, epoch by epoch, how linearly separable the representation is. Here:

- **Features**: the method's evaluation features (:meth:`SSLMethod.embed
  <metricssl.ssl.method.SSLMethod.embed>` of the clean, un-augmented batch, the method in eval
  mode), the same ones the online kNN score and ``metricssl embed`` use, so the probe is
  trained and scored on one representation. They are computed without gradient, so nothing
  reaches the backbone; the extra forward pass (no backward) is the probe's cost. Eval mode
  leaves BatchNorm statistics untouched and draws no random number: the method trains
  exactly as it would without the probe.
- **Classifier**: one ``nn.Linear`` (zero-initialised: no draw from the global generator),
  no normalisation layer, so that under DDP half a batch per process gives the whole batch's
  gradients.
- **Optimiser**: its own SGD (lr 0.1, momentum 0.9, no weight decay: solo-learn's classifier
  settings) with a cosine decay over the run's steps, stepped with the method's optimiser.
  Its own optimiser, not a parameter group of the method's: the method's optimiser (LARS,
  AdamW, ...) and its learning rate stay exactly what they were, and checkpoints without a
  probe keep their optimiser state.

Under DDP the probe is part of the module DistributedDataParallel wraps
(:class:`ProbedMethod`), so its gradients are averaged with the method's in the same
backward pass. Its loss is added to the method's only for that backward pass: its input is
detached, so the gradient of every method parameter is the method's loss's alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.chunking import row_chunks
from ..core.validation import check_number
from .method import Batch, SSLMethod
from .schedule import WarmupCosineSchedule

PROBE_LR = 0.1
PROBE_MOMENTUM = 0.9


def evaluation_features(method: SSLMethod, images: torch.Tensor) -> torch.Tensor:
    """``method.embed(images)`` in eval mode without gradient; the method's mode is restored.

    Example:
        >>> from metricssl.ssl.registry import build_method
        >>> method = build_method("simclr", (1, 8, 8), backbone_kwargs={"embedding_dim": 16})
        >>> evaluation_features(method, torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape
        torch.Size([2, 16])
    """
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad():
            return method.embed(images)
    finally:
        method.train(was_training)


class LinearProbe(nn.Module):
    """A linear classifier over ``classes`` (any integers, e.g. the training labels).

    A label outside ``classes`` can never be predicted: it counts as an error in
    :meth:`accuracy` and is left out of the training loss.

    Args:
        feature_dim: the features' width.
        classes: the class labels, 1-D integers (sorted and made unique here).

    Example:
        >>> probe = LinearProbe(4, torch.tensor([7, 0, 3]))
        >>> probe(torch.randn(5, 4)).shape
        torch.Size([5, 3])
        >>> probe.codes(torch.tensor([7, 3, 5])).tolist()
        [2, 1, -1]
    """

    def __init__(self, feature_dim: int, classes: torch.Tensor):
        super().__init__()
        check_number("feature_dim", feature_dim, low=1, integer=True)
        if not torch.is_tensor(classes) or classes.ndim != 1 or classes.numel() == 0:
            raise ValueError("classes must be a non-empty 1-D tensor of class labels")
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise TypeError(f"classes must be integers, got {classes.dtype}")
        self.register_buffer("classes", torch.unique(classes.long()))
        self.linear = nn.Linear(feature_dim, self.classes.numel())
        # Zero weights: a softmax regression needs no symmetry breaking, and no random draw
        # keeps the method's random streams as they are without the probe.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def codes(self, labels: torch.Tensor) -> torch.Tensor:
        """Each label's position in ``classes``, -1 for a label outside them."""
        labels = labels.to(self.classes.device, torch.int64)
        position = torch.searchsorted(self.classes, labels).clamp(max=self.classes.numel() - 1)
        return torch.where(self.classes[position] == labels, position, -1)

    def loss_and_accuracy(
        self, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-entropy on detached ``features`` (with gradient for the probe only) and
        the batch's accuracy (detached); no value is read on the host."""
        logits = self(features.detach())
        codes = self.codes(labels)
        loss = F.cross_entropy(logits.float(), codes, ignore_index=-1)
        accuracy = (logits.argmax(dim=1) == codes).float().mean()
        return loss, accuracy.detach()

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy on ``features`` (row chunks within the memory budget)."""
        width = self.linear.in_features
        if features.ndim != 2 or features.shape[1] != width or len(features) != len(labels):
            raise ValueError(
                f"features must be (N, {width}) with one label per row, got "
                f"{tuple(features.shape)} and {tuple(labels.shape)} labels"
            )
        if features.shape[0] == 0:
            return float("nan")
        codes = self.codes(labels)
        correct = torch.zeros((), dtype=torch.int64, device=self.classes.device)
        row_bytes = 4 * (features.shape[1] + self.classes.numel())
        for rows in row_chunks(features.shape[0], row_bytes, device=features.device):
            predicted = self(features[rows].to(self.classes.device)).argmax(dim=1)
            correct += (predicted == codes[rows]).sum()
        return int(correct) / features.shape[0]


class ProbedMethod(nn.Module):
    """A method and its probe as one module: what DistributedDataParallel wraps, so the
    probe's gradients are averaged with the method's.

    ``forward(batch, images)`` runs the probe on ``images`` (the batch's clean images, before
    augmentation) and adds ``probe_loss`` (with gradient, for the probe only) and
    ``probe_train_accuracy`` to the method's outputs; ``forward(batch)`` is the method's step
    alone.
    """

    def __init__(self, method: SSLMethod, probe: LinearProbe):
        super().__init__()
        self.method = method
        self.probe = probe

    def forward(self, batch: Batch, images: torch.Tensor | None = None) -> dict:
        if images is None:
            return self.method(batch)
        if batch.labels is None:
            raise ValueError("the linear probe needs the batch's labels, it has none")
        # Before the step: the features then come from the weights the step starts from.
        features = evaluation_features(self.method, images)
        out = self.method(batch)
        loss, accuracy = self.probe.loss_and_accuracy(features, batch.labels)
        return {**out, "probe_loss": loss, "probe_train_accuracy": accuracy}


class OnlineLinearProbe:
    """The probe, its optimiser and its schedule: what the Trainer steps, saves and restores.

    Args:
        probe: the classifier.
        total_steps: optimizer steps in the whole run (the cosine decay's length).
        lr: the base learning rate (SGD, momentum 0.9, no weight decay).

    Example:
        >>> online = OnlineLinearProbe(LinearProbe(4, torch.arange(3)), total_steps=10)
        >>> sorted(online.state_dict())
        ['model', 'optimizer', 'schedule']
    """

    def __init__(self, probe: LinearProbe, total_steps: int, lr: float = PROBE_LR):
        check_number("total_steps", total_steps, low=1, integer=True)
        check_number("lr", lr, low=0, low_inclusive=False)
        self.module = probe
        self.optimizer = torch.optim.SGD(
            probe.parameters(), lr=lr, momentum=PROBE_MOMENTUM, weight_decay=0.0
        )
        self.schedule = WarmupCosineSchedule(self.optimizer, total_steps)

    @classmethod
    def for_method(
        cls,
        method: SSLMethod,
        labels: torch.Tensor,
        input_shape,
        total_steps: int,
        device: torch.device | str = "cpu",
    ) -> OnlineLinearProbe:
        """A probe over the classes of ``labels``, as wide as ``method``'s evaluation
        features (measured on two blank images of ``input_shape``)."""
        param = next(iter(method.parameters()), None)
        where = param.device if param is not None else torch.device("cpu")
        blank = torch.zeros((2, *input_shape), dtype=torch.uint8, device=where)
        feature_dim = evaluation_features(method, blank).shape[1]
        return cls(LinearProbe(feature_dim, labels).to(device), total_steps)

    def step(self, scaler: torch.amp.GradScaler) -> None:
        """One optimizer step (through the method's gradient scaler, before its ``update``)
        and the schedule's; a step without gradients (the probe did not run) moves nothing."""
        if self.module.linear.weight.grad is not None:
            scaler.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy on held-out ``features``; the probe is put in eval mode."""
        return self.module.eval().accuracy(features, labels)

    def state_dict(self) -> dict:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
