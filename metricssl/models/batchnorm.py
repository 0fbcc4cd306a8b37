"""Running the BatchNorm layers of a network on a batch without updating their statistics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ..core.validation import check_module


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``module``'s BatchNorm layers leave their running statistics alone.

    In training mode each layer still normalises with the batch's own mean and variance; it
    only stops folding them into ``running_mean``/``running_var`` (and
    ``num_batches_tracked``), which evaluation uses. For a batch that does not look like the
    images the network will be evaluated on, such as PIRL's 7x7 jigsaw tiles next to its
    whole 28x28 views: mixed in, the tiles' statistics would normalise whole images at
    evaluation time. The layers' settings are restored on leaving, also after an error.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.models.batchnorm import frozen_running_stats
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        >>> with frozen_running_stats(net):
        ...     _ = net(torch.randn(8, 1, 6, 6) + 5)
        >>> net[1].running_mean.abs().max().item()
        0.0
    """
    check_module("module", module)
    layers = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    # In training mode a layer without tracking normalises by the batch and skips the update.
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield module
    finally:
        for layer in layers:
            layer.track_running_stats = True
