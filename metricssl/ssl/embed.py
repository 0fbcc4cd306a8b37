"""Embedding whole datasets with a trained method (clean images, eval mode, in chunks)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.validation import check_number
from .datasets import ImageData
from .method import SSLMethod


@torch.no_grad()
def embed_dataset(
    method: SSLMethod,
    images,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = False,
    out_device: torch.device | str | None = "cpu",
) -> torch.Tensor:
    """Features of every image, as a float32 tensor (N, F) on ``out_device``.

    The method runs in eval mode (BatchNorm uses its running statistics) and is put back in
    the mode it was in; images go through the method's clean transform, not its augmentation.

    Args:
        method: a trained :class:`~metricssl.ssl.method.SSLMethod` (e.g. from
            :func:`~metricssl.ssl.checkpoint.load_checkpoint`).
        images: uint8 (N, C, H, W) tensor or array, or :class:`~metricssl.ssl.datasets.ImageData`.
        batch_size: images per forward pass.
        device: where to run (default: where the method's parameters are).
        progress: show a progress bar.
        out_device: where the features are gathered (default the CPU; None: where they are
            computed, so that evaluation on a GPU never copies them to the host and back).

    Example:
        >>> from metricssl.ssl.registry import build_method
        >>> from metricssl.ssl.embed import embed_dataset
        >>> from metricssl.data.digits import load_digits
        >>> images, labels = load_digits("test")
        >>> method = build_method("simclr", images.shape[1:])
        >>> embed_dataset(method, images).shape
        torch.Size([359, 128])
    """
    if not isinstance(method, SSLMethod):
        raise TypeError(f"method must be an SSLMethod, got {type(method).__name__}")
    check_number("batch_size", batch_size, low=1, integer=True)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    data = images if isinstance(images, ImageData) else ImageData(images, None)
    if data.images is not None:
        method.check_images(data.images)
    if device is None:
        param = next(iter(method.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    gather = device if out_device is None else torch.device(out_device)
    was_training = method.training
    method.eval()
    out = []
    try:
        bar = tqdm(total=len(data), desc="embed", unit="img", disable=not progress)
        for batch, _ in data.batches(torch.arange(len(data)), batch_size):
            features = method.embed(batch.to(device, non_blocking=True))
            out.append(features.float().to(gather, non_blocking=True))
            bar.update(len(batch))
        bar.close()
    finally:
        method.train(was_training)
    return torch.cat(out)
