"""LARS: SGD with a per-layer trust ratio, for large-batch self-supervised training."""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from ..core.validation import check_bool, check_number


class LARS(Optimizer):
    """Layer-wise Adaptive Rate Scaling on top of SGD with momentum.

    You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks", arXiv 2017;
    used by SimCLR, BYOL and Barlow Twins. For each parameter tensor ``w`` with gradient
    ``g`` the update direction is ``d = g + weight_decay * w``, rescaled by the trust ratio
    ``eta * |w| / |d|`` (1 when either norm is 0), then fed to heavy-ball momentum::

        v = momentum * v + trust * d;   w = w - lr * v

    As in those papers, parameters with fewer than two dimensions (biases, BatchNorm scales)
    get neither weight decay nor the trust ratio when ``exclude_1d`` is True: they follow
    plain SGD with momentum.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: heavy-ball momentum in [0, 1).
        weight_decay: L2 penalty added to the gradient of multi-dimensional tensors.
        eta: trust coefficient.
        exclude_1d: leave 1-D tensors out of weight decay and adaptation.

    Example:
        >>> import torch
        >>> from metricssl.ssl.lars import LARS
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = LARS(model.parameters(), lr=0.1, weight_decay=1e-6)
        >>> model(torch.randn(3, 4)).sum().backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        exclude_1d: bool = True,
    ):
        check_number("lr", lr, low=0)
        check_number("momentum", momentum, low=0, high=1, high_inclusive=False)
        check_number("weight_decay", weight_decay, low=0)
        check_number("eta", eta, low=0, low_inclusive=False)
        check_bool("exclude_1d", exclude_1d)
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, exclude_1d=exclude_1d
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                d = w.grad
                if not (group["exclude_1d"] and w.ndim < 2):
                    if group["weight_decay"]:
                        d = d.add(w, alpha=group["weight_decay"])
                    w_norm, d_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0), group["eta"] * w_norm / d_norm, 1.0
                    )
                    d = d * trust
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d)
                w.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
