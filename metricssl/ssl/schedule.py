"""Step-wise schedules: learning rate (linear warmup, then cosine) and EMA momentum."""

from __future__ import annotations

import math

from torch.optim import Optimizer

from ..core.validation import check_number


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_factor: float) -> float:
    """The factor on the base learning rate at optimizer step ``step`` (0-based).

    Linear from ``1 / (warmup_steps + 1)`` up to 1 over the first ``warmup_steps`` steps (never
    exactly 0, so the first step moves), then a half cosine from 1 down to ``final_factor`` at
    ``total_steps``; constant at ``final_factor`` beyond it.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL's target momentum: ``final - (final - base) * (cos(pi * step / total) + 1) / 2``.

    Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020: 0.99 -> 1 over training.
    """
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class WarmupCosineSchedule:
    """Sets each parameter group's ``lr`` to ``base_lr * warmup_cosine(step, ...)``.

    Call :meth:`step` after every optimizer step. A group marked ``"fixed_lr": True`` keeps its
    base rate (SimSiam's predictor). The state (step count and base learning
    rates) is plain numbers, so it survives ``torch.load(weights_only=True)``.

    Args:
        optimizer: the optimizer whose groups' current ``lr`` are the base rates.
        total_steps: optimizer steps in the whole run.
        warmup_steps: steps of linear warmup (< total_steps, or 0).
        final_factor: the factor reached at the end, in [0, 1].

    Example:
        >>> import torch
        >>> from metricssl.ssl.schedule import WarmupCosineSchedule
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        >>> sched = WarmupCosineSchedule(opt, total_steps=100, warmup_steps=10)
        >>> opt.step(); sched.step()
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        final_factor: float = 0.0,
    ):
        check_number("total_steps", total_steps, low=1, integer=True)
        check_number("warmup_steps", warmup_steps, low=0, integer=True)
        check_number("final_factor", final_factor, low=0, high=1)
        if warmup_steps >= total_steps and warmup_steps > 0:
            raise ValueError(
                f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})"
            )
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.final_factor = final_factor
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def factor(self, step: int | None = None) -> float:
        step = self.last_step if step is None else step
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.final_factor)

    def get_last_lr(self) -> list[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def _apply(self) -> None:
        f = self.factor()
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base if group.get("fixed_lr", False) else base * f

    def state_dict(self) -> dict:
        return {
            "last_step": self.last_step,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_factor": self.final_factor,
        }

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()
