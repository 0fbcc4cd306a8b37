"""Image files decoded on access: the common part of image folders and manifests."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.validation import check_choice

MODES = ("RGB", "L")


class ImageFiles(Dataset):
    """Items read from ``samples`` = [(path, label)] on access, as uint8 (C, H, W) tensors.

    Labels are known without opening a file (``targets``); an image is decoded only when its
    item is read, i.e. in a DataLoader worker. Items are ``(image, label)`` when ``classes``
    is not empty, else ``image``.

    Args:
        samples: (path, label) pairs; label -1 when unlabelled.
        classes: class names (index = label), empty when unlabelled.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 grey channel); every image is converted.
        transform: optional callable applied to each uint8 (C, H, W) tensor.

    Example:
        >>> from metricssl.data.image_files import ImageFiles
        >>> ds = ImageFiles([("a.png", 0), ("b.png", 1)], ["cat", "dog"])
        >>> ds.targets.tolist(), ds.class_to_idx
        ([0, 1], {'cat': 0, 'dog': 1})
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | os.PathLike, int]],
        classes: Sequence[str] = (),
        mode: str = "RGB",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        check_choice("mode", mode, MODES)
        if transform is not None and not callable(transform):
            raise TypeError("transform must be callable or None")
        self.samples = [(Path(p), int(label)) for p, label in samples]
        self.classes = list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.labelled = bool(self.classes)
        self.mode = mode
        self.transform = transform

    @property
    def targets(self) -> torch.Tensor:
        """All labels as an int64 tensor (-1 for unlabelled images), read without decoding."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = read_image(path, self.mode)
        if self.transform is not None:
            image = self.transform(image)
        if not self.labelled:
            return image
        return image, torch.tensor(label, dtype=torch.int64)


def read_image(path: str | os.PathLike, mode: str = "RGB") -> torch.Tensor:
    """Decode one PNG/JPEG file into a uint8 (C, H, W) tensor with C = 3 (RGB) or 1 (L)."""
    check_choice("mode", mode, MODES)
    try:
        from PIL import Image
    except ImportError as err:
        # matplotlib cannot stand in: it decodes PNGs through Pillow too.
        raise ImportError(
            "reading image files needs the optional package Pillow: pip install pillow"
        ) from err
    path = Path(path)
    try:
        with Image.open(path) as img:
            array = np.array(img.convert(mode))  # a writable copy, safe to share with torch
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode image: {err}") from err
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
