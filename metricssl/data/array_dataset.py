"""A map-style dataset over an in-memory image array and optional labels."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def _as_tensor(x, name: str) -> torch.Tensor:
    if torch.is_tensor(x):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)  # shares memory: no copy of a large array
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


class ArrayDataset(Dataset):
    """Images (and labels) held in memory, like ``torch.utils.data.TensorDataset``.

    Items are ``(image, label)`` with labels, or just ``image`` without. Numpy inputs are
    wrapped without copying; images keep their dtype (uint8 stays uint8, so a batch is
    converted to float on the device by the augmentation, not here).

    Args:
        images: (N, ...) tensor or array, e.g. uint8 (N, C, H, W).
        labels: optional (N,) integer labels.

    Example:
        >>> from metricssl.data.array_dataset import ArrayDataset
        >>> from metricssl.data.digits import load_digits
        >>> ds = ArrayDataset(*load_digits())
        >>> image, label = ds[0]
        >>> image.shape, label
        (torch.Size([1, 8, 8]), tensor(0))
    """

    def __init__(self, images, labels=None) -> None:
        images = _as_tensor(images, "images")
        if images.ndim < 1 or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty (N, ...) array, got {tuple(images.shape)}"
            )
        if labels is not None:
            labels = _as_tensor(labels, "labels")
            if labels.ndim != 1:
                raise ValueError(f"labels must be 1D (N,), got shape {tuple(labels.shape)}")
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise TypeError(f"labels must be integers, got {labels.dtype}")
            if labels.shape[0] != images.shape[0]:
                raise ValueError(
                    f"images has {images.shape[0]} items but labels has {labels.shape[0]}"
                )
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        if self.labels is None:
            return self.images[index]
        return self.images[index], self.labels[index]
