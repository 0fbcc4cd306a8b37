"""Embedding whole datasets with a trained method (clean images, eval mode, in chunks), in
memory (:func:`embed_dataset`) or straight to a file on disk (:func:`embed_to_file`)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.atomic import atomic_write
from ..core.validation import check_number
from .datasets import ImageData
from .method import SSLMethod

# Room kept at the start of a file for its header, written once the row count is known
# (a stream's length is only known at its end); the data follows it.
_NPY_HEADER_BYTES = 128
_SAFETENSORS_HEADER_BYTES = 1024


def embedded_batches(
    method: SSLMethod,
    images,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = False,
    out_device: torch.device | str | None = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(features, labels)`` batch by batch: float32 (B, F) features on ``out_device`` and
    the images' int64 (B,) labels (or None). Arguments as in :func:`embed_dataset`; the
    method is in eval mode while the batches are read, and put back in its mode after.
    The arguments are checked at the call, before any batch is read."""
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
    return _embedded(method, data, batch_size, device, gather, progress)


@torch.no_grad()
def _embedded(method, data, batch_size, device, gather, progress):
    was_training = method.training
    method.eval()
    bar = tqdm(total=len(data), desc="embed", unit="img", disable=not progress)
    try:
        for batch, labels in data.batches(torch.arange(len(data)), batch_size):
            features = method.embed(batch.to(device, non_blocking=True))
            bar.update(len(batch))
            yield features.float().to(gather, non_blocking=True), labels
    finally:
        bar.close()
        method.train(was_training)


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
    For more features than fit in memory, write them to disk with :func:`embed_to_file`.

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
    batches = embedded_batches(method, images, batch_size, device, progress, out_device)
    return torch.cat([features for features, _ in batches])


@dataclass(frozen=True)
class EmbeddingFile:
    """What :func:`embed_to_file` wrote: ``path``, ``rows`` x ``dim`` float32 features, and
    whether a ``labels`` tensor is in the file (.safetensors only)."""

    path: Path
    rows: int
    dim: int
    labels: bool


def embed_to_file(
    method: SSLMethod,
    images,
    path: str | os.PathLike,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> EmbeddingFile:
    """Embed every image and write the features to ``path`` batch by batch: memory stays at
    one batch of images and features, however many images there are.

    ``.npy``: one float32 (N, F) array (``np.load(path, mmap_mode="r")`` reads it without
    loading it). ``.safetensors``: tensors ``embeddings`` (float32 (N, F)) and, when the
    images have labels, ``labels`` (int64 (N,), the only part kept in memory until the end).
    The file is written atomically: a reader sees the old file or the complete new one.

    Other arguments as in :func:`embed_dataset`.

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> from metricssl.ssl.registry import build_method
        >>> from metricssl.data.digits import load_digits
        >>> images, _ = load_digits("test")
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "digits.npy"
        >>> embed_to_file(build_method("simclr", images.shape[1:]), images, out).rows
        359
        >>> np.load(out, mmap_mode="r").shape
        (359, 128)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".safetensors"):
        raise ValueError(f"path must end in .npy or .safetensors, got {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"path must be a file, {str(path)!r} is a folder")
    header_bytes = _NPY_HEADER_BYTES if suffix == ".npy" else _SAFETENSORS_HEADER_BYTES
    # Features stay where they are computed and are copied to the host blocking, right
    # before they are written (a non-blocking copy could be read before it lands).
    batches = embedded_batches(method, images, batch_size, device, progress, out_device=None)
    rows, dim, labels = 0, None, []
    with atomic_write(path) as f:
        f.write(b"\0" * header_bytes)
        for features, batch_labels in batches:
            if dim is None:
                dim = features.shape[1]
            f.write(features.cpu().numpy().astype("<f4", copy=False).tobytes())
            rows += len(features)
            if suffix == ".safetensors" and batch_labels is not None:
                labels.append(batch_labels.to("cpu", torch.int64))
        dim = 0 if dim is None else dim
        if labels and sum(len(x) for x in labels) != rows:
            raise ValueError("some batches of the images have labels and others do not")
        if labels:
            f.write(torch.cat(labels).numpy().astype("<i8", copy=False).tobytes())
        f.seek(0)
        if suffix == ".npy":
            f.write(_npy_header(rows, dim))
        else:
            f.write(_safetensors_header(rows, dim, bool(labels)))
    return EmbeddingFile(path, rows, dim, bool(labels))


def _npy_header(rows: int, dim: int) -> bytes:
    """A version 1.0 .npy header for little-endian float32 (rows, dim), padded with spaces
    to exactly :data:`_NPY_HEADER_BYTES` as the format allows."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    room = _NPY_HEADER_BYTES - 10  # magic (6), version (2), header length (2)
    text = text.ljust(room - 1) + "\n"
    if len(text) != room:
        raise ValueError(f"{rows} x {dim} does not fit a .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", room) + text.encode("latin1")


def _safetensors_header(rows: int, dim: int, labelled: bool) -> bytes:
    """A safetensors header for ``embeddings`` (then ``labels``), padded with spaces to
    exactly :data:`_SAFETENSORS_HEADER_BYTES` as the format allows."""
    end = rows * dim * 4
    header = {"embeddings": {"dtype": "F32", "shape": [rows, dim], "data_offsets": [0, end]}}
    if labelled:
        header["labels"] = {"dtype": "I64", "shape": [rows], "data_offsets": [end, end + 8 * rows]}
    header["__metadata__"] = {"format": "metricssl-embeddings"}
    text = json.dumps(header).encode("utf-8")
    room = _SAFETENSORS_HEADER_BYTES - 8
    if len(text) > room:
        raise ValueError(f"{rows} x {dim} does not fit a safetensors header")
    return struct.pack("<Q", room) + text.ljust(room, b" ")
