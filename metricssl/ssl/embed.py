"""Embedding whole datasets with a trained method (clean images, eval mode, in chunks), in
memory (:func:`embed_dataset`) or straight to a file on disk (:func:`embed_to_file`)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..core.atomic import atomic_write
from ..core.distributed import init_from_environment, is_distributed, rank, world_size
from ..core.validation import check_choice, check_number
from .datasets import ImageData
from .method import SSLMethod

if TYPE_CHECKING:
    from ..index.shards import ShardManifest

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
    *,
    indices: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(features, labels)`` batch by batch: float32 (B, F) features on ``out_device`` and
    the images' int64 (B,) labels (or None). Arguments as in :func:`embed_dataset`; the
    method is in eval mode while the batches are read, and put back in its mode after.
    ``indices`` (int64, default all of them) picks the images read, in that order.
    The arguments are checked at the call, before any batch is read."""
    if not isinstance(method, SSLMethod):
        raise TypeError(f"method must be an SSLMethod, got {type(method).__name__}")
    check_number("batch_size", batch_size, low=1, integer=True)
    data = _image_data(images)
    if data.images is not None:
        method.check_images(data.images)
    device = _run_device(method, device)
    gather = device if out_device is None else torch.device(out_device)
    if indices is None:
        indices = torch.arange(len(data))
    return _embedded(method, data, indices, batch_size, device, gather, progress)


def _image_data(images) -> ImageData:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    return images if isinstance(images, ImageData) else ImageData(images, None)


def _run_device(method: SSLMethod, device: torch.device | str | None) -> torch.device:
    """``device``, or where the method's parameters are (the CPU for a method without any)."""
    if device is None:
        param = next(iter(method.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    return torch.device(device)


@torch.no_grad()
def _embedded(method, data, indices, batch_size, device, gather, progress):
    was_training = method.training
    method.eval()
    bar = tqdm(total=len(indices), desc="embed", unit="img", disable=not progress)
    try:
        for batch, labels in data.batches(indices, batch_size):
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


_FLOAT16_MAX = float(np.finfo(np.float16).max)

# The settings of a sharded run, kept next to its parts: a rerun resumes only the same run.
RUN_RECORD = "embed-run.json"


@dataclass(frozen=True)
class EmbeddedShards:
    """What :func:`embed_shards` left on disk: the shard set's ``manifest`` and how many of
    this run's parts (all ranks together) were written now or found complete and kept."""

    manifest: ShardManifest
    parts_written: int
    parts_kept: int


def rank_share(n: int, rank: int, world: int) -> range:
    """The contiguous run of ``range(n)`` rank ``rank`` of ``world`` embeds: every item once,
    no padding, shares that differ by at most one item.

    Example:
        >>> [list(rank_share(5, r, 2)) for r in range(2)]
        [[0, 1], [2, 3, 4]]
    """
    return range(rank * n // world, (rank + 1) * n // world)


def embed_shards(
    method: SSLMethod,
    images,
    folder: str | os.PathLike,
    *,
    shard_rows: int = 65536,
    dtype: str = "float32",
    batch_size: int = 512,
    device: torch.device | str | None = None,
    progress: bool = False,
    encoder_sha256: str | None = None,
) -> EmbeddedShards:
    """Embed every image into a shard set (:mod:`metricssl.index.shards`) in ``folder``, in
    one process or in every process of a ``torchrun`` job.

    Each rank embeds its contiguous share of the images (:func:`rank_share`) and writes it
    in parts of at most ``shard_rows`` rows, ``part-RANK-CHUNK``: memory stays at one part.
    Once every rank is done, rank 0 writes ``manifest.json``. The process group is the one
    already started, or one started here from torchrun's environment (``WORLD_SIZE`` > 1)
    and closed at the end.

    Resumable: a part whose files are on disk (each written atomically) is kept, so a rerun
    of an interrupted run embeds only what is missing. The run's settings (image count,
    world size, ``shard_rows``, ``dtype``, ``encoder_sha256``) are recorded in
    ``embed-run.json``; a rerun with other settings is refused before any image is read.

    Args:
        method: a trained method (e.g. from :func:`~metricssl.ssl.checkpoint.load_checkpoint`).
        images: uint8 (N, C, H, W) tensor or array, or a random-access
            :class:`~metricssl.data.image_data.ImageData` (not a stream).
        folder: where the shard set goes (created when missing).
        shard_rows: rows per part file.
        dtype: storage of the embeddings, ``"float32"`` or ``"float16"`` (half the disk).
        batch_size, device, progress: as in :func:`embed_dataset` (the bar on rank 0 only).
        encoder_sha256: the encoder's checksum recorded in the manifest (the CLI passes the
            checkpoint file's SHA-256).

    Example:
        >>> import tempfile
        >>> from metricssl.ssl.registry import build_method
        >>> from metricssl.data.digits import load_digits
        >>> images, _ = load_digits("test")
        >>> method = build_method("simclr", images.shape[1:])
        >>> done = embed_shards(method, images[:100], tempfile.mkdtemp(), shard_rows=40)
        >>> done.manifest.count, len(done.manifest.shards), done.parts_written
        (100, 3, 3)
    """
    from ..index.shards import DTYPES

    if not isinstance(method, SSLMethod):
        raise TypeError(f"method must be an SSLMethod, got {type(method).__name__}")
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a str or os.PathLike, got {type(folder).__name__}")
    check_number("shard_rows", shard_rows, low=1, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True)
    check_choice("dtype", dtype, DTYPES)
    if encoder_sha256 is not None and not isinstance(encoder_sha256, str):
        raise TypeError(f"encoder_sha256 must be a str or None, got {encoder_sha256!r}")
    data = _image_data(images)
    if not data.random_access:
        raise ValueError(
            "images is a stream: sharded embedding reads images by position, give a "
            "Dataset, a folder, a manifest or a tensor"
        )
    if len(data) == 0:
        raise ValueError("images is empty: there is nothing to embed")
    if data.images is not None:
        method.check_images(data.images)
    device = _run_device(method, device)
    started = init_from_environment(device)
    try:
        settings = {
            "count": len(data),
            "world_size": world_size(),
            "shard_rows": shard_rows,
            "dtype": dtype,
            "encoder_sha256": encoder_sha256,
        }
        return _embed_shards(method, data, Path(folder), settings, batch_size, device, progress)
    finally:
        if started:
            dist.destroy_process_group()


def _embed_shards(method, data, folder, settings, batch_size, device, progress):
    from ..index.shards import ShardManifest, part_stem

    me, world = rank(), settings["world_size"]
    folder.mkdir(parents=True, exist_ok=True)
    _check_run_record(folder / RUN_RECORD, settings)
    if me == 0 and not (folder / RUN_RECORD).exists():
        with atomic_write(folder / RUN_RECORD, "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=1)
    share = rank_share(settings["count"], me, world)
    shards, written, dim = [], 0, None
    # One bar for the share (rank 0's), advanced part by part, kept parts included.
    bar = tqdm(total=len(share), desc="embed", unit="img", disable=not (progress and me == 0))
    with bar:
        for chunk, start in enumerate(range(share.start, share.stop, settings["shard_rows"])):
            ids = torch.arange(start, min(start + settings["shard_rows"], share.stop))
            stem = part_stem(me, chunk)
            shard = _kept_part(folder, stem, ids, settings["dtype"])
            if shard is None:
                shard = _write_part(
                    method, data, folder, stem, ids, settings["dtype"], batch_size, device
                )
                written += 1
            shards.append(shard)
            dim = np.load(folder / shard.path, mmap_mode="r").shape[1]
            bar.update(len(ids))
    mine = (shards, written, dim)
    everyone = [mine]
    if is_distributed():
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)  # also waits for every rank to be done
    all_shards = [shard for ranked, _, _ in everyone for shard in ranked]
    dim = next(d for _, _, d in everyone if d is not None)
    manifest = ShardManifest(
        folder, dim, settings["dtype"], settings["count"], settings["encoder_sha256"], all_shards
    )
    if me == 0:
        manifest.write()
    if is_distributed():
        dist.barrier()  # no rank returns before the manifest is on disk
    parts_written = sum(w for _, w, _ in everyone)
    return EmbeddedShards(manifest, parts_written, len(all_shards) - parts_written)


def _check_run_record(path: Path, settings: dict) -> None:
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable record of a sharded run ({err})") from None
    if recorded != settings:
        changed = [
            f"{key} {recorded.get(key)!r} -> {value!r}"
            for key, value in settings.items()
            if recorded.get(key) != value
        ] or ["unknown fields"]
        raise ValueError(
            f"{path.parent} holds the shards of another run ({'; '.join(changed)}): give a "
            "new folder, or delete this one to start again"
        )


def _kept_part(folder: Path, stem: str, ids: torch.Tensor, dtype: str):
    """The :class:`~metricssl.index.shards.Shard` of a part already on disk (its embeddings
    file is written last), checked against this run; None when it is not there."""
    from ..core.digest import file_digest
    from ..index.shards import DTYPES, Shard, check_npy, npy_header

    path, ids_path, labels = (
        folder / f"{stem}{end}" for end in (".npy", ".ids.npy", ".labels.npy")
    )
    if not path.exists():
        return None
    try:
        found = npy_header(path)[0]
        # The width is the part's own; its rows, dtype, size and ids must be this run's.
        check_npy(path, (len(ids), found[-1] if found else 0), DTYPES[dtype])
        check_npy(ids_path, (len(ids),), np.dtype("<i8"))
        if not np.array_equal(np.load(ids_path), ids.numpy()):
            raise ValueError(f"{ids_path}: holds other ids than this run's part {stem}")
        if labels.exists():
            check_npy(labels, (len(ids),), np.dtype("<i8"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{err}; {folder} holds a damaged part or one of another run: give a new folder, "
            "or delete this one to start again"
        ) from None
    label_name = labels.name if labels.exists() else None
    return Shard(path.name, ids_path.name, label_name, len(ids), file_digest(path))


def _write_part(method, data, folder, stem, ids, dtype, batch_size, device):
    from ..index.shards import DTYPES, write_shard

    vectors, labels, row = None, [], 0
    # As in embed_to_file: features are copied to the host blocking, right before they are
    # stored (a non-blocking copy could be read before it lands).
    batches = embedded_batches(method, data, batch_size, device, out_device=None, indices=ids)
    for features, batch_labels in batches:
        features = features.cpu().numpy()
        if vectors is None:
            vectors = np.empty((len(ids), features.shape[1]), dtype=DTYPES[dtype])
        if dtype == "float16" and np.abs(features).max(initial=0) > _FLOAT16_MAX:
            raise ValueError(
                f"embeddings of {stem} exceed float16's range ({_FLOAT16_MAX:g}): store them "
                "as float32"
            )
        vectors[row : row + len(features)] = features
        row += len(features)
        if batch_labels is not None:
            labels.append(batch_labels.to("cpu", torch.int64).numpy())
    if labels and sum(map(len, labels)) != len(ids):
        raise ValueError("some batches of the images have labels and others do not")
    part_labels = np.concatenate(labels) if labels else None
    return write_shard(folder, stem, vectors, ids.numpy(), part_labels)


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
