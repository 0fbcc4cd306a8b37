"""SwAV's swapped prediction: predict one view's Sinkhorn cluster codes from another view."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import common as c_f
from ..core.distributed import gather_local_first
from ..core.validation import ArgumentError, check_bool, check_embeddings, check_number


def _check_sinkhorn_args(epsilon, iterations) -> None:
    check_number("epsilon", epsilon, low=0, low_inclusive=False)
    check_number("iterations", iterations, low=1, integer=True)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Soft cluster assignments (codes) of ``B`` samples to ``K`` prototypes, equipartitioned.

    Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", NeurIPS 2020, section 3.1: the codes ``Q`` maximise
    ``Tr(Q^T C^T Z) + epsilon * H(Q)`` over the transportation polytope, where every
    prototype receives the same share of the batch. The solution is
    ``diag(u) exp(scores / epsilon) diag(v)``, found with a few Sinkhorn-Knopp iterations
    (Cuturi, "Sinkhorn Distances", NeurIPS 2013) that alternately rescale the prototypes'
    totals to ``1 / K`` and the samples' totals to ``1 / B``. The result is scaled so that
    every row (sample) sums to 1; every column (prototype) then sums to about ``B / K``,
    exactly so in the limit of many iterations.

    The iterations run in the log domain (log-sum-exp normalisations), so no ``exp(score /
    epsilon)`` overflows or underflows, whatever the scale of the scores; half-precision
    inputs are computed in float32. No gradient flows through the codes (they are targets).

    Args:
        scores: (B, K) similarities of the samples to the prototypes (cosines in SwAV).
        epsilon: entropy regularisation; smaller gives harder assignments (0.05 in the paper).
        iterations: Sinkhorn-Knopp iterations (3 in the paper).

    Returns:
        (B, K) codes in the dtype of ``scores``, rows summing to 1.

    Example:
        >>> import torch
        >>> from metricssl.losses.swav_loss import sinkhorn
        >>> q = sinkhorn(torch.randn(32, 8).tanh(), iterations=100)  # 3 in training
        >>> torch.allclose(q.sum(dim=1), torch.ones(32))
        True
        >>> torch.allclose(q.sum(dim=0), torch.full((8,), 32 / 8), atol=1e-3)
        True
    """
    check_embeddings(scores, "scores")
    _check_sinkhorn_args(epsilon, iterations)
    n, k = scores.shape
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = scores.detach().to(c_f.accumulation_dtype(scores.dtype)) / epsilon
        log_k, log_n = math.log(k), math.log(n)
        for _ in range(iterations):
            # Every prototype gets a total mass of 1 / K ...
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - log_k
            # ... and every sample a total mass of 1 / B.
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_n
        # The last step already made the rows equal; the softmax rescales them to exactly 1.
        return torch.softmax(log_q, dim=1).to(scores.dtype)


class SwAVLoss(nn.Module):
    """SwAV's swapped-prediction loss over multi-crop views.

    Caron, Misra, Mairal, Goyal, Bojanowski and Joulin, "Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", NeurIPS 2020. For every crop ``v`` the
    input is its (B, K) prototype scores ``s_v = z_v . c_k`` (unit-length projections ``z``
    against unit-length prototypes ``c``). The codes ``q_i = sinkhorn(s_i)`` are computed
    from the global (high-resolution) crops only, without gradient; every other crop, global
    or local, predicts them through ``p_v = softmax(s_v / temperature)``::

        loss = 1 / G * sum_{i global} 1 / (V - 1) * sum_{v != i}
               mean_b ( - sum_k q_i[b, k] * log p_v[b, k] )

    with ``G`` global crops and ``V`` crops in all, as in the paper's code.

    A queue of past global-crop projections (kept by the caller, see
    :class:`~metricssl.ssl.swav.SwAV`) enters through ``queue_scores``: its scores against
    the current prototypes are appended to the batch's before the Sinkhorn iterations, so the
    equipartition holds over more samples than a small batch has. The queue's codes are then
    dropped; it contributes no loss term and no gradient.

    Distributed training: with ``gather_distributed=True`` and an initialised process group,
    the scores of the codes are gathered from every rank (without gradient) before the
    Sinkhorn iterations, so the equipartition holds over the global batch, as the paper's
    distributed Sinkhorn does. Each rank keeps the codes of its own rows; DDP's gradient
    averaging then gives the gradient of the global-batch loss.

    Args:
        temperature: of the softmax predictions (0.1 in the paper).
        sinkhorn_epsilon: entropy regularisation of the codes (0.05).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3).
        gather_distributed: compute the codes over all ranks' rows (see above).

    Example:
        >>> import torch
        >>> from metricssl.losses.swav_loss import SwAVLoss
        >>> loss_fn = SwAVLoss(temperature=0.1)
        >>> global_scores = [torch.randn(16, 30).tanh() for _ in range(2)]
        >>> local_scores = [torch.randn(16, 30).tanh() for _ in range(4)]
        >>> loss = loss_fn(global_scores, local_scores)
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        gather_distributed: bool = False,
    ):
        super().__init__()
        check_number("temperature", temperature, low=0, low_inclusive=False)
        check_number("sinkhorn_epsilon", sinkhorn_epsilon, low=0, low_inclusive=False)
        check_number("sinkhorn_iterations", sinkhorn_iterations, low=1, integer=True)
        check_bool("gather_distributed", gather_distributed)
        self.temperature = float(temperature)
        self.sinkhorn_epsilon = float(sinkhorn_epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.gather_distributed = gather_distributed

    def forward(
        self,
        global_scores: Sequence[torch.Tensor],
        local_scores: Sequence[torch.Tensor] = (),
        queue_scores: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The loss; ``queue_scores``: None, or one (Q_i, K) tensor (or None) per global crop."""
        codes = self.codes(global_scores, queue_scores)
        return self.swapped_prediction(list(global_scores) + list(local_scores), codes)

    def codes(
        self,
        global_scores: Sequence[torch.Tensor],
        queue_scores: Sequence[torch.Tensor | None] | None = None,
    ) -> list[torch.Tensor]:
        """The Sinkhorn codes of the global crops' rows, one (B, K) tensor per global crop."""
        global_scores = _check_scores("global_scores", global_scores, min_count=1)
        n, k = global_scores[0].shape
        if queue_scores is None:
            queue_scores = [None] * len(global_scores)
        if not isinstance(queue_scores, Sequence) or len(queue_scores) != len(global_scores):
            raise ArgumentError(
                f"queue_scores must hold one tensor (or None) per global crop "
                f"({len(global_scores)}), got {queue_scores!r:.80}"
            )
        codes = []
        for i, (scores, queued) in enumerate(zip(global_scores, queue_scores)):
            rows = scores.detach()
            if self.gather_distributed:
                # This rank's rows first: its codes are the first n rows of the result.
                rows = gather_local_first(rows, with_grad=False)
            if queued is not None:
                check_embeddings(queued, f"queue_scores[{i}]", allow_empty=True)
                if queued.shape[1] != k:
                    raise ArgumentError(
                        f"queue_scores[{i}] has {queued.shape[1]} prototypes, the scores {k}"
                    )
                rows = torch.cat([rows, queued.detach().to(rows.dtype)])
            codes.append(sinkhorn(rows, self.sinkhorn_epsilon, self.sinkhorn_iterations)[:n])
        return codes

    def swapped_prediction(
        self, scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """The loss given the codes: ``scores[i]``'s codes are ``codes[i]`` for the first
        ``len(codes)`` crops (the global ones), predicted by every other crop's scores."""
        scores = _check_scores("scores", scores, min_count=2)
        if not 1 <= len(codes) <= len(scores):
            raise ArgumentError(
                f"codes must hold one tensor per global crop (1 to {len(scores)}), got {len(codes)}"
            )
        for i, q in enumerate(codes):
            if not torch.is_tensor(q) or q.shape != scores[0].shape:
                raise ArgumentError(
                    f"codes[{i}] must be a tensor of shape {tuple(scores[0].shape)}, got "
                    f"{tuple(q.shape) if torch.is_tensor(q) else type(q).__name__}"
                )
        dtype = scores[0].dtype
        acc = c_f.accumulation_dtype(dtype)
        with torch.autocast(device_type=scores[0].device.type, enabled=False):
            log_p = [F.log_softmax(s.to(acc) / self.temperature, dim=1) for s in scores]
            total = 0.0
            for i, q in enumerate(codes):
                q = q.detach().to(acc)
                cross = [-(q * log_p[v]).sum(dim=1).mean() for v in range(len(scores)) if v != i]
                total = total + torch.stack(cross).mean()
            return (total / len(codes)).to(dtype)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, sinkhorn_epsilon={self.sinkhorn_epsilon}, "
            f"sinkhorn_iterations={self.sinkhorn_iterations}, "
            f"gather_distributed={self.gather_distributed}"
        )


def _check_scores(name: str, scores, min_count: int) -> list[torch.Tensor]:
    if torch.is_tensor(scores) or not isinstance(scores, Sequence):
        raise TypeError(f"{name} must be a sequence of (B, K) tensors, one per crop")
    scores = list(scores)
    if len(scores) < min_count:
        raise ArgumentError(f"{name} must hold at least {min_count} crops, got {len(scores)}")
    for i, s in enumerate(scores):
        check_embeddings(s, f"{name}[{i}]")
        if s.shape != scores[0].shape:
            raise ArgumentError(
                f"{name}[{i}] has shape {tuple(s.shape)}, {name}[0] {tuple(scores[0].shape)}: "
                "every crop needs the same batch and prototypes"
            )
    return scores
