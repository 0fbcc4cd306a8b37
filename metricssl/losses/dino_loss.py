"""DINO's loss: a centred, sharpened teacher distribution predicted by the student, across crops."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..core import common as c_f
from ..core.distributed import is_distributed
from ..core.validation import ArgumentError, check_embeddings, check_number


def teacher_temperature(
    step: int | torch.Tensor, warmup_steps: int, warmup_temp: float, final_temp: float
) -> float | torch.Tensor:
    """DINO's teacher temperature at ``step``: linear from ``warmup_temp`` at step 0 to
    ``final_temp`` at ``warmup_steps``, constant afterwards.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
    section 3.1 and appendix: 0.04 rising to 0.07 over the first 30 epochs (a teacher that is
    too soft early on makes training unstable). The unit of ``step`` is the caller's (optimizer
    steps in :class:`~metricssl.ssl.dino.DINO`). A tensor ``step`` (a step counter kept on the
    device) gives a 0-d float tensor on its device during the warmup, so no host
    synchronisation is needed.

    Example:
        >>> from metricssl.losses.dino_loss import teacher_temperature
        >>> [round(teacher_temperature(s, 10, 0.04, 0.07), 4) for s in (0, 5, 10, 50)]
        [0.04, 0.055, 0.07, 0.07]
    """
    if warmup_steps <= 0:
        return final_temp
    if torch.is_tensor(step):
        progress = (step.double() / warmup_steps).clamp(0.0, 1.0)
        return (warmup_temp + (final_temp - warmup_temp) * progress).float()
    progress = min(max(step / warmup_steps, 0.0), 1.0)
    return warmup_temp + (final_temp - warmup_temp) * progress


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-row entropy (nats) of (N, K) probabilities; 0 * log 0 counts as 0."""
    return -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(dim=-1)


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened softmax and the student's.

    Caron, Touvron, Misra, Jegou, Mairal, Bojanowski and Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers", ICCV 2021. For teacher outputs ``t_i`` of the global
    crops and student outputs ``s_v`` of every crop (the first ``len(teacher_outputs)`` student
    crops are the same global crops, in the same order),

    ``P_t,i = softmax((t_i - c) / tau_t)``, ``log P_s,v = log_softmax(s_v / tau_s)``,
    ``loss = mean over pairs (i, v), v != i, of mean_batch( -sum_k P_t,i log P_s,v )``.

    Both collapse modes are held off by two opposite forces: centring (subtracting ``c``)
    stops one dimension from dominating but pushes towards a uniform output; sharpening
    (``tau_t`` < ``tau_s``) pushes the other way. The centre ``c`` is an exponential moving
    average of the teacher's batch mean output, ``c <- m c + (1 - m) mean(t)``, a registered
    buffer (so it is in ``state_dict()``). Under torch.distributed the batch mean is taken over
    every rank's batch (an all-reduce), so every rank keeps the same centre.

    The teacher temperature follows :func:`teacher_temperature` of the ``step`` passed in.
    Computed in float32 for half-precision inputs, outside autocast.

    Args:
        output_dim: ``K``, the width of the head's output (the centre's size).
        warmup_teacher_temp: the teacher temperature at step 0 (0.04).
        teacher_temp: the teacher temperature after the warmup (0.04; the paper raises it to
            0.07 when training is stable).
        warmup_teacher_temp_steps: steps of the linear warmup (0: ``teacher_temp`` at once).
        student_temp: the student temperature (0.1).
        center_momentum: ``m`` of the centre's moving average, in [0, 1] (0.9).

    :meth:`forward` computes the loss and, in training mode, then updates the centre. The
    pieces are public for methods that also log diagnostics: :meth:`teacher_probs`,
    :meth:`cross_entropy`, :meth:`update_center`, :meth:`statistics`.

    Example:
        >>> import torch
        >>> from metricssl.losses.dino_loss import DINOLoss
        >>> loss_fn = DINOLoss(output_dim=32)
        >>> teacher = [torch.randn(8, 32) for _ in range(2)]  # the two global crops
        >>> student = [torch.randn(8, 32, requires_grad=True) for _ in range(4)]  # all crops
        >>> loss = loss_fn(student, teacher, step=0)
        >>> loss.backward()
        >>> bool(loss_fn.center.abs().sum() > 0)  # the centre moved towards the teacher's mean
        True
    """

    def __init__(
        self,
        output_dim: int,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.04,
        warmup_teacher_temp_steps: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        check_number("output_dim", output_dim, low=1, integer=True)
        check_number("warmup_teacher_temp", warmup_teacher_temp, low=0, low_inclusive=False)
        check_number("teacher_temp", teacher_temp, low=0, low_inclusive=False)
        check_number("warmup_teacher_temp_steps", warmup_teacher_temp_steps, low=0, integer=True)
        check_number("student_temp", student_temp, low=0, low_inclusive=False)
        check_number("center_momentum", center_momentum, low=0, high=1)
        self.output_dim = int(output_dim)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.teacher_temp = float(teacher_temp)
        self.warmup_teacher_temp_steps = int(warmup_teacher_temp_steps)
        self.student_temp = float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, self.output_dim))

    def teacher_temperature(self, step: int | torch.Tensor) -> float | torch.Tensor:
        """The teacher temperature at ``step`` (see :func:`teacher_temperature`)."""
        return teacher_temperature(
            step, self.warmup_teacher_temp_steps, self.warmup_teacher_temp, self.teacher_temp
        )

    def forward(
        self,
        student_outputs: Sequence[torch.Tensor],
        teacher_outputs: Sequence[torch.Tensor],
        step: int | torch.Tensor = 0,
    ) -> torch.Tensor:
        """The loss at ``step``; in training mode the centre is updated afterwards."""
        targets = self.teacher_probs(teacher_outputs, step)
        loss = self.cross_entropy(student_outputs, targets)
        if self.training:
            self.update_center(teacher_outputs)
        return loss

    @torch.no_grad()
    def teacher_probs(
        self, teacher_outputs: Sequence[torch.Tensor], step: int | torch.Tensor = 0
    ) -> list[torch.Tensor]:
        """``softmax((t_i - c) / tau_t(step))`` of each global crop, float32 (or float64), no
        gradient, with the current centre."""
        teacher_outputs = _check_outputs("teacher_outputs", teacher_outputs, self.output_dim, 1)
        temp = self.teacher_temperature(step)
        acc = c_f.accumulation_dtype(teacher_outputs[0].dtype)
        center = self.center.to(acc)
        with torch.autocast(device_type=teacher_outputs[0].device.type, enabled=False):
            return [F.softmax((t.detach().to(acc) - center) / temp, dim=1) for t in teacher_outputs]

    def cross_entropy(
        self, student_outputs: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The mean over pairs (i, v), v != i, of the batch-mean cross-entropy between the
        teacher's ``teacher_probs[i]`` and the student's ``softmax(student_outputs[v] /
        tau_s)``."""
        student_outputs = _check_outputs("student_outputs", student_outputs, self.output_dim, 1)
        teacher_probs = _check_outputs("teacher_probs", teacher_probs, self.output_dim, 1)
        n_teacher, n_student = len(teacher_probs), len(student_outputs)
        if n_teacher > n_student or n_student < 2:
            raise ArgumentError(
                f"the student needs every teacher crop and at least one other crop: got "
                f"{n_student} student and {n_teacher} teacher crops"
            )
        if teacher_probs[0].shape != student_outputs[0].shape:
            raise ArgumentError(
                f"teacher crops have shape {tuple(teacher_probs[0].shape)}, student crops "
                f"{tuple(student_outputs[0].shape)}: they need the same batch"
            )
        dtype = student_outputs[0].dtype
        acc = c_f.accumulation_dtype(dtype)
        with torch.autocast(device_type=student_outputs[0].device.type, enabled=False):
            log_p = [F.log_softmax(s.to(acc) / self.student_temp, dim=1) for s in student_outputs]
            terms = [
                -(teacher_probs[i].detach().to(acc) * log_p[v]).sum(dim=1).mean()
                for i in range(n_teacher)
                for v in range(n_student)
                if v != i
            ]
            return torch.stack(terms).mean().to(dtype)

    @torch.no_grad()
    def update_center(self, teacher_outputs: Sequence[torch.Tensor]) -> None:
        """``c <- m c + (1 - m) mean(t)``, the mean over every global crop of the batch (of
        every rank under torch.distributed)."""
        teacher_outputs = _check_outputs("teacher_outputs", teacher_outputs, self.output_dim, 1)
        rows = torch.cat([t.detach() for t in teacher_outputs]).to(self.center.dtype)
        # Sum and row count in one all-reduce: ranks may hold batches of different sizes.
        total = torch.cat([rows.sum(dim=0), rows.new_full((1,), rows.shape[0])])
        if is_distributed():
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        mean = total[:-1] / total[-1]
        self.center.mul_(self.center_momentum).add_(mean, alpha=1.0 - self.center_momentum)

    @torch.no_grad()
    def statistics(self, teacher_probs: Sequence[torch.Tensor] | torch.Tensor) -> dict:
        """Collapse diagnostics of the teacher's distributions (0-d tensors, nats).

        - ``teacher_entropy``: the mean entropy of a teacher row. Near ``log K``: uniform
          targets (collapse to the uniform output); near 0: one-hot targets.
        - ``teacher_mean_entropy``: the entropy of the batch-mean teacher distribution. Near 0:
          every image is sent to the same dimension (collapse to one dimension);
          ``log K - teacher_mean_entropy`` is its KL divergence from the uniform distribution.

        A healthy teacher has a ``teacher_entropy`` well below ``teacher_mean_entropy``
        (confident rows that use different dimensions); both collapse modes make them equal.
        """
        if torch.is_tensor(teacher_probs):
            teacher_probs = [teacher_probs]
        probs = torch.cat(list(teacher_probs)).float()
        return {
            "teacher_entropy": entropy(probs).mean(),
            "teacher_mean_entropy": entropy(probs.mean(dim=0)),
        }

    def extra_repr(self) -> str:
        return (
            f"output_dim={self.output_dim}, warmup_teacher_temp={self.warmup_teacher_temp}, "
            f"teacher_temp={self.teacher_temp}, "
            f"warmup_teacher_temp_steps={self.warmup_teacher_temp_steps}, "
            f"student_temp={self.student_temp}, center_momentum={self.center_momentum}"
        )


def _check_outputs(name: str, outputs, width: int, min_count: int) -> list[torch.Tensor]:
    if torch.is_tensor(outputs) or not isinstance(outputs, Sequence):
        raise TypeError(f"{name} must be a sequence of (B, K) tensors, one per crop")
    outputs = list(outputs)
    if len(outputs) < min_count:
        raise ArgumentError(f"{name} must hold at least {min_count} crop(s), got {len(outputs)}")
    for i, x in enumerate(outputs):
        check_embeddings(x, f"{name}[{i}]")
        if x.shape[1] != width:
            raise ArgumentError(f"{name}[{i}] has {x.shape[1]} dimensions, output_dim is {width}")
        if x.shape != outputs[0].shape:
            raise ArgumentError(
                f"{name}[{i}] has shape {tuple(x.shape)}, {name}[0] {tuple(outputs[0].shape)}: "
                "every crop needs the same batch"
            )
    return outputs
