"""A dataset over a folder of PNG/JPEG files, with or without one subfolder per class."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.validation import check_choice

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MODES = ("RGB", "L")


class ImageFolder(Dataset):
    """Images read from disk on access, as uint8 (C, H, W) tensors.

    Two layouts are understood:

    * ``root/<class>/<image>``: labelled; classes are the subfolder names in sorted order,
      items are ``(image, label)``;
    * ``root/<image>``: unlabelled (e.g. for self-supervised training); items are ``image``.

    Files are decoded with Pillow, an optional dependency (it comes with matplotlib, i.e.
    with ``metricssl[viz]``); without it, reading an item raises an ImportError naming it.

    Args:
        root: the folder.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 grey channel); every image is converted.
        transform: optional callable applied to each uint8 (C, H, W) tensor, e.g. a resize
            when the images differ in size and must be batched.

    Attributes:
        classes: class names (empty for the unlabelled layout).
        class_to_idx: name -> label.
        samples: list of (path, label) with label -1 when unlabelled.

    Example:
        >>> from metricssl.data.image_folder import ImageFolder
        >>> ds = ImageFolder("photos/")  # doctest: +SKIP
        >>> image, label = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike,
        mode: str = "RGB",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}")
        check_choice("mode", mode, MODES)
        if transform is not None and not callable(transform):
            raise TypeError("transform must be callable or None")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {str(self.root)!r} is not a folder")
        self.mode = mode
        self.transform = transform

        subdirs = sorted(
            p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        top_images = _image_files(self.root)
        if subdirs and top_images:
            raise ValueError(
                f"{self.root} mixes image files and subfolders; use either root/<class>/<image> "
                f"(labelled) or root/<image> (unlabelled)"
            )
        if subdirs:
            self.classes = [p.name for p in subdirs]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
            self.samples = [(f, i) for i, d in enumerate(subdirs) for f in _image_files(d)]
        else:
            self.classes, self.class_to_idx = [], {}
            self.samples = [(f, -1) for f in top_images]
        if not self.samples:
            raise ValueError(f"no {'/'.join(IMAGE_EXTENSIONS)} files found under {self.root}")
        self.labelled = bool(self.classes)

    @property
    def targets(self) -> torch.Tensor:
        """All labels as an int64 tensor (-1 for unlabelled images)."""
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


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


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
