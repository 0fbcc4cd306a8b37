"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches.

Where the data is looked for, in order: ``root`` then the cache folder (``cache_dir``, else
``$METRICSSL_CACHE/<dataset>``, else ``~/.cache/metricssl/<dataset>``). In each folder an
extracted batch folder (``cifar-10-batches-py`` / ``cifar-100-python``, or the folder itself)
is used first, then the ``.tar.gz`` archive. With ``download=True`` the archive is fetched
into the cache folder. Archives are checked against the published MD5 before anything is
read from them, extracted batch files against their known MD5s, and every batch is
unpickled with :class:`~metricssl.data.restricted_pickle.RestrictedUnpickler`, so a tampered
file can never run code. Archives are read in place (one sequential pass, nothing extracted
to disk).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.error
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.validation import check_choice
from .cache import dataset_cache_dir
from .download import download_url, verify_checksums
from .restricted_pickle import restricted_loads

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class CifarDataset:
    """Where a CIFAR dataset lives and how its batches are named and checked."""

    name: str  # cache folder name
    url: str
    archive: str
    archive_md5: str
    folder: str  # top folder inside the archive
    splits: Mapping[str, tuple[tuple[str, str], ...]]  # split -> ((batch file, md5), ...)
    label_keys: Mapping[str, str]  # label mode -> key in a batch dict
    n_classes: Mapping[str, int]  # label mode -> number of classes


# Published on https://www.cs.toronto.edu/~kriz/cifar.html (archives); the batch MD5s are
# the ones torchvision and others record for the extracted files.
CIFAR10 = CifarDataset(
    name="cifar-10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    splits={
        "train": (
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        "test": (("test_batch", "40351d587109b95175f43aff81a1287e"),),
    },
    label_keys={"fine": "labels"},
    n_classes={"fine": 10},
)

CIFAR100 = CifarDataset(
    name="cifar-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive="cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    splits={
        "train": (("train", "16019d7e3df5f24257cddd939b257f8d"),),
        "test": (("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    },
    label_keys={"fine": "fine_labels", "coarse": "coarse_labels"},
    n_classes={"fine": 100, "coarse": 20},
)

_IMAGE_BYTES = 3 * 32 * 32


def load_cifar10(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
    tech. report, University of Toronto, 2009) as uint8 tensors.

    Args:
        root: a folder with the archive or the extracted ``cifar-10-batches-py`` folder
            (or that folder itself); searched before the cache folder.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        download: fetch the archive (163 MB) into the cache folder when it is not found.
        cache_dir: the cache folder (default ``$METRICSSL_CACHE/cifar-10`` or
            ``~/.cache/metricssl/cifar-10``).
        verify: check the archive / batch files against the published MD5s.
        progress: show a progress bar while downloading.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) RGB and int64 (N,); class names are in
        ``CIFAR10_CLASSES``.

    Example:
        >>> from metricssl.data.cifar import load_cifar10
        >>> images, labels = load_cifar10(split="test", download=True)  # doctest: +SKIP
    """
    return load_cifar(CIFAR10, root, split, "fine", download, cache_dir, verify, progress)


def load_cifar100(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    *,
    label_mode: str = "fine",
    verify: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-100 (Krizhevsky, 2009) as uint8 tensors; ``label_mode="fine"`` gives the 100
    classes, ``"coarse"`` the 20 superclasses. Other arguments as in :func:`load_cifar10`.

    Example:
        >>> from metricssl.data.cifar import load_cifar100
        >>> images, labels = load_cifar100(split="test", download=True)  # doctest: +SKIP
    """
    return load_cifar(CIFAR100, root, split, label_mode, download, cache_dir, verify, progress)


def load_cifar(
    spec: CifarDataset,
    root: str | os.PathLike | None,
    split: str,
    label_mode: str,
    download: bool,
    cache_dir: str | os.PathLike | None,
    verify: bool,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find (or download), check and decode one split of a CIFAR dataset."""
    check_choice("split", split, tuple(spec.splits))
    check_choice("label_mode", label_mode, tuple(spec.label_keys))
    for name, flag in (("download", download), ("verify", verify), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}")
    cache = dataset_cache_dir(spec.name, cache_dir)
    search = ([Path(root).expanduser()] if root is not None else []) + [cache]
    batches = spec.splits[split]

    raw = None
    for folder in search:
        raw = _read_from_folder(spec, folder, batches, verify) or _read_from_archive(
            spec, folder / spec.archive, batches, verify
        )
        if raw is not None:
            break
    if raw is None and download:
        archive = _download(spec, cache, progress)
        raw = _read_from_archive(spec, archive, batches, verify)
    if raw is None:
        raise FileNotFoundError(
            f"{spec.name}: neither {spec.archive} nor an extracted {spec.folder} folder found in "
            + ", ".join(str(d) for d in search)
            + "; pass root=<folder> or download=True"
        )

    images, labels = [], []
    for source, data in raw:
        batch_images, batch_labels = _decode_batch(data, source, spec.label_keys[label_mode])
        images.append(batch_images)
        labels.append(batch_labels)
    labels = np.concatenate(labels)
    n_classes = spec.n_classes[label_mode]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"{spec.name}: labels span {labels.min()}..{labels.max()}, expected 0..{n_classes - 1}"
        )
    images = np.concatenate(images).reshape(-1, 3, 32, 32)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _read_from_folder(spec, folder: Path, batches, verify) -> list | None:
    """Raw batch bytes from an extracted folder, or None if the folder is not one."""
    for candidate in (folder / spec.folder, folder):
        paths = [candidate / name for name, _ in batches]
        if all(p.is_file() for p in paths):
            out = []
            for path, (_, md5) in zip(paths, batches):
                data = path.read_bytes()
                if verify and hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
                    raise ValueError(
                        f"{path} does not match its published MD5 {md5}: corrupt or not the "
                        f"original {spec.name} file (pass verify=False to load it anyway)"
                    )
                out.append((str(path), data))
            return out
    return None


def _read_from_archive(spec, archive: Path, batches, verify) -> list | None:
    """Raw batch bytes read straight out of the .tar.gz, or None if there is no archive."""
    if not archive.is_file():
        return None
    if verify:
        verify_checksums(archive, md5=spec.archive_md5)
    wanted = {f"{spec.folder}/{name}": name for name, _ in batches}
    found = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # One sequential pass: random access into a .tar.gz would decompress it again.
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ValueError(f"{archive} is not a readable .tar.gz archive: {err}") from err
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"{archive} lacks the batch files {missing}")
    return [(f"{archive}:{name}", found[name]) for name in wanted]


def _download(spec, cache: Path, progress: bool) -> Path:
    try:
        return download_url(spec.url, cache / spec.archive, md5=spec.archive_md5, progress=progress)
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(f"{spec.name}: could not download {spec.url}: {err}") from err


def _decode_batch(data: bytes, source: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = restricted_loads(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{source}: not a valid CIFAR batch: {err}") from err
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: a CIFAR batch must be a dict, got {type(batch).__name__}")
    # Python 2 pickles decode keys as str with latin1; files re-saved with bytes keys also occur.
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = batch.get("data"), batch.get(label_key)
    if images is None or labels is None:
        raise ValueError(f"{source}: batch lacks the 'data' or {label_key!r} entry")
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != _IMAGE_BYTES
    ):
        raise ValueError(
            f"{source}: 'data' must be a uint8 array of shape (N, {_IMAGE_BYTES}), got "
            f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        )
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{source}: {label_key!r} must hold integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.shape != (images.shape[0],):
        raise ValueError(
            f"{source}: {images.shape[0]} images but {label_key!r} has shape {labels.shape}"
        )
    return images, labels
