"""The backbone contract, and Embedder: backbone + optional head + optional normalisation.

Any ``nn.Module`` can be a backbone if ``backbone(images)`` maps float images ``(N, C, H, W)``
to features ``(N, F)``. The feature width ``F`` is read from a ``num_features`` attribute
when the module has one (every backbone in :mod:`metricssl.models` does), and otherwise
found by :func:`infer_num_features` with one dry run (:func:`probe_num_features`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validation import check_bool, check_module


def infer_num_features(backbone: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The width ``F`` of ``backbone``'s output for images of shape ``input_shape = (C, H, W)``.

    Returns ``backbone.num_features`` when present; otherwise runs the backbone once
    (:func:`probe_num_features`).

    Example:
        >>> from torch import nn
        >>> from metricssl.models.embedder import infer_num_features
        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> infer_num_features(net, (1, 28, 28))
        8
    """
    check_module("backbone", backbone)
    known = getattr(backbone, "num_features", None)
    if known is not None:
        if isinstance(known, bool) or not isinstance(known, int) or known < 1:
            raise ValueError(f"backbone.num_features must be a positive int, got {known!r}")
        return known
    return probe_num_features(backbone, input_shape)


def probe_num_features(backbone: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The width ``F`` of ``backbone``'s output, found by running it once on two zero images
    of shape ``input_shape = (C, H, W)`` (two, so BatchNorm layers accept the batch), in eval
    mode and without gradient, on the device and dtype of its parameters; its mode is
    restored. Output other than ``(2, F)`` is a ``ValueError``.

    Example:
        >>> from torch import nn
        >>> from metricssl.models.embedder import probe_num_features
        >>> probe_num_features(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2))
        5
    """
    check_module("backbone", backbone)
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    param = next(iter(backbone.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            out = backbone(torch.zeros((2, *shape), device=device, dtype=dtype))
    finally:
        backbone.train(was_training)
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(
            f"backbone must map images (N, C, H, W) to features (N, F); for input (2, "
            f"{', '.join(map(str, shape))}) it returned {got}"
        )
    return int(out.shape[1])


class Embedder(nn.Module):
    """``images -> backbone -> [head] -> [L2-normalise]``: one module to train or to embed with.

    Args:
        backbone: any module mapping ``(N, C, H, W)`` float images to ``(N, F)`` features.
        head: an optional module applied to the features (a
            :class:`~metricssl.models.heads.ProjectionHead`, say).
        normalize: L2-normalise the output rows.

    ``num_features`` is the output width when it can be known without running the model
    (the head's ``output_dim``, or the backbone's ``num_features`` without a head), else None.

    Example:
        >>> import torch
        >>> from metricssl.models import Embedder, ProjectionHead, SmallCNN
        >>> model = Embedder(SmallCNN(), ProjectionHead(128, 256, 64), normalize=True)
        >>> model(torch.randn(4, 1, 28, 28)).shape
        torch.Size([4, 64])
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, normalize: bool = False):
        super().__init__()
        check_module("backbone", backbone)
        check_module("head", head, allow_none=True)
        check_bool("normalize", normalize)
        self.backbone = backbone
        self.head = head
        self.normalize = normalize
        source = backbone if head is None else head
        width = getattr(source, "num_features" if head is None else "output_dim", None)
        self.num_features = width if isinstance(width, int) else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.backbone(images)
        if self.head is not None:
            out = self.head(out)
        return F.normalize(out, dim=1) if self.normalize else out
