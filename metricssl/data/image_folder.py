"""A dataset over a folder of PNG/JPEG files, with or without one subfolder per class."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from .image_files import MODES, ImageFiles, read_image

__all__ = ["IMAGE_EXTENSIONS", "MODES", "ImageFolder", "read_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageFolder(ImageFiles):
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
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"root {str(root)!r} is not a folder")
        self.root = root

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
            classes = [p.name for p in subdirs]
            samples = [(f, i) for i, d in enumerate(subdirs) for f in _image_files(d)]
        else:
            classes, samples = [], [(f, -1) for f in top_images]
        if not samples:
            raise ValueError(f"root: no {'/'.join(IMAGE_EXTENSIONS)} files found under {self.root}")
        super().__init__(samples, classes, mode, transform)


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
