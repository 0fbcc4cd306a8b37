"""What the ``metricssl`` commands read and check before any work: images for a checkpoint
(a named dataset, an image folder, a manifest or image files, fitted to the channels and size
the checkpoint was trained at) and the ``--out``, ``--data-dir`` and ``--device`` checks.

Example:
    >>> from metricssl.cli_data import check_device
    >>> check_device("cpu")  # a device this machine has: no error
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

DOWNLOADABLE_HINT = "on the command line: --data-dir FOLDER, or --download to fetch it"


# -- checks before any work -----------------------------------------------------------------


def check_device(name, flag: str = "--device") -> None:
    """A device this machine has (``auto`` always is); else a one-line ValueError."""
    if name is None or name == "auto":
        return
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{flag} {name!r}: not a torch device ({err})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reason = (
                "this torch is built without CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise ValueError(f"{flag} {name}: {reason}; use --device cpu (or auto)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{flag} {name}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{flag} {name}: MPS is not available; use --device cpu (or auto)")


def check_data_dir(path, flag: str = "--data-dir") -> None:
    """An existing folder, or nothing: never a silent fall-back to another place."""
    if path is not None and not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"{flag} {str(path)!r}: no such folder")


def check_writable_folder(path, flag: str = "--out") -> None:
    """``path`` is (or can be created as) a folder this process may write to, checked without
    creating anything."""
    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == path else f" ({probe} is a file)"
        raise ValueError(f"{flag} {str(path)!r}: not a folder{where}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {str(path)!r}: no permission to write in {probe}")


# -- images for a checkpoint ----------------------------------------------------------------


def image_mode(input_shape) -> str:
    """Pillow's mode for a (C, H, W) input: ``L`` for one channel, ``RGB`` for three."""
    channels = int(input_shape[0])
    if channels not in (1, 3):
        raise ValueError(f"the checkpoint takes {channels}-channel images; files give 1 or 3")
    return "L" if channels == 1 else "RGB"


@dataclass
class Images:
    """Images to embed: ``data`` (ImageData), their labels (or None), class names and the
    file of each image (for folders and manifests, else None), and a description."""

    data: object
    labels: object
    class_names: list | None
    paths: list | None
    description: str


def checkpoint_images(method, args, split: str, data=None) -> Images:
    """The images of ``data`` (default ``--data``: a folder, a manifest or a list of image
    files) or of one split of ``--dataset``, in the channels and size ``method`` was trained
    at (resized in the DataLoader workers), ready for :func:`~metricssl.ssl.embed_dataset`."""
    from .data import resolve_data
    from .data.image_files import ImageFiles

    source = data if data is not None else args.data
    if isinstance(source, list):
        source = ImageFiles([(path, -1) for path in source])
    shape = method.input_shape
    with dataset_hint():
        loaded = resolve_data(
            source if source is not None else args.dataset,
            getattr(args, "data_dir", None),
            split,
            getattr(args, "download", False),
            getattr(args, "num_workers", 0),
            image_size=tuple(shape[1:]),
            mode=image_mode(shape),
        )
    files = loaded.dataset if isinstance(loaded.dataset, ImageFiles) else None
    if source is None:
        description = f"{args.dataset} {split}"
    else:
        description = str(data if data is not None else args.data)
    return Images(
        loaded,
        loaded.labels,
        (files.classes or None) if files is not None else None,
        [str(path) for path, _ in files.samples] if files is not None else None,
        description,
    )


@contextmanager
def dataset_hint():
    """Add the command-line way to a named dataset's "not found" error, whose own advice
    (``root=<folder>`` or ``download=True``) is for Python callers."""
    try:
        yield
    except FileNotFoundError as err:
        if "download=True" not in str(err):
            raise
        raise FileNotFoundError(f"{err}; {DOWNLOADABLE_HINT}") from err
