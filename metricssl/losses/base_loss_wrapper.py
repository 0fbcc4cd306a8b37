"""BaseLossWrapper: a module that wraps a loss and accepts only the losses it supports."""

from __future__ import annotations

import torch


class BaseLossWrapper(torch.nn.Module):
    """Base of loss wrappers (SelfSupervisedLoss, CrossBatchMemory), as in PML.

    Subclasses list the class names they can wrap in :meth:`supported_losses`; any other loss
    is refused in ``__init__`` with a ``TypeError`` naming the supported ones. Matching by
    name (PML's rule) lets a wrapper take PML's losses as well as ours.
    """

    def __init__(self, loss: torch.nn.Module):
        super().__init__()
        self.check_loss_support(type(loss).__name__)

    @staticmethod
    def supported_losses() -> list[str]:
        raise NotImplementedError

    @classmethod
    def check_loss_support(cls, loss_name: str) -> None:
        supported = cls.supported_losses()
        if loss_name not in supported:
            raise TypeError(
                f"{cls.__name__} does not support {loss_name}; supported losses: "
                f"{', '.join(supported)}"
            )
