"""MNIST and Fashion-MNIST from their IDX files: a local copy when there is one, else a download.

Where the files are looked for, in order:

1. ``root``, when given (``<name>.gz`` or the uncompressed ``<name>``);
2. for Fashion-MNIST, Debian's ``dataset-fashion-mnist`` package at
   /usr/share/datasets/fashion-mnist;
3. the cache folder (``cache_dir``, else ``$METRICSSL_CACHE/<dataset>``, else
   ``~/.cache/metricssl/<dataset>``);
4. with ``download=True``, the official mirrors, into the cache folder, after checking the
   published MD5 and SHA-256 of each ``.gz``.

Local files are checked too (``verify=True``): Fashion-MNIST by the SHA-256 of the
uncompressed bytes, which covers Debian's copy (Debian rewrote the gzip headers, so its
``.gz`` files no longer match the published archive checksums, but the deflate streams are
byte-identical to the published ones), MNIST ``.gz`` files by the published archive
checksums. Uncompressed MNIST files have no published digest and get the structural checks
only (IDX header, shapes, label range).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.validation import check_choice
from .cache import dataset_cache_dir
from .download import download_url, verify_checksums
from .idx import parse_idx, read_idx_bytes

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class IdxFile:
    """One IDX file: its name without ``.gz`` and the digests it must have."""

    name: str
    md5: str  # published, of name + ".gz"
    sha256: str  # of name + ".gz"
    content_sha256: str | None = None  # of the uncompressed bytes, where known


@dataclass(frozen=True)
class IdxDataset:
    """Where an IDX dataset lives and how its files are checked."""

    name: str  # cache folder name
    mirrors: tuple[str, ...]  # base URLs, tried in order
    splits: Mapping[str, tuple[IdxFile, IdxFile]]  # split -> (images, labels)
    system_dirs: tuple[str, ...] = ()
    n_classes: int = 10
    image_shape: tuple[int, int] = (28, 28)


# Archive digests: the Zalando README (MD5) and independent SHA-256 records of the same
# files. Content digests: computed from Debian's copy, whose deflate streams were confirmed
# byte-identical to the published archives by restoring the original gzip header and
# reproducing both published digests.
FASHION_MNIST = IdxDataset(
    name="fashion-mnist",
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    splits={
        "train": (
            IdxFile(
                "train-images-idx3-ubyte",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            IdxFile(
                "train-labels-idx1-ubyte",
                "25c81989df183df01b3e8a0aad5dffbe",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
        ),
        "test": (
            IdxFile(
                "t10k-images-idx3-ubyte",
                "bef4ecab320f06d8554ea6380940ec79",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte",
                "bb300cfdad3c16e7a12a480ee83cd310",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        ),
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

MNIST = IdxDataset(
    name="mnist",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    splits={
        "train": (
            IdxFile(
                "train-images-idx3-ubyte",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            IdxFile(
                "train-labels-idx1-ubyte",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
        ),
        "test": (
            IdxFile(
                "t10k-images-idx3-ubyte",
                "9fb629c4189551a2d022fa330f9573f3",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte",
                "ec29112dd5afa0611ce80d1b7f02629c",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
    },
)


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
    Benchmarking Machine Learning Algorithms", arXiv 2017) as uint8 tensors.

    Args:
        root: a folder holding the IDX files (``.gz`` or not); searched first.
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        download: fetch missing files from the official mirrors into the cache folder.
        cache_dir: the cache folder (default ``$METRICSSL_CACHE/fashion-mnist`` or
            ``~/.cache/metricssl/fashion-mnist``).
        verify: check local files against the known digests (see the module docstring);
            set False only for deliberately modified files.
        progress: show a progress bar while downloading.

    Returns:
        ``(images, labels)``: uint8 (N, 1, 28, 28) and int64 (N,); class names are in
        ``FASHION_MNIST_CLASSES``.

    Example:
        >>> from metricssl.data.mnist import load_fashion_mnist
        >>> images, labels = load_fashion_mnist(split="test")
        >>> images.shape, labels.shape
        (torch.Size([10000, 1, 28, 28]), torch.Size([10000]))
    """
    return load_idx_dataset(FASHION_MNIST, root, split, download, cache_dir, verify, progress)


def load_mnist(
    root: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST (LeCun, Bottou, Bengio and Haffner, "Gradient-Based Learning Applied to Document
    Recognition", Proc. IEEE 1998) as uint8 tensors; arguments as in
    :func:`load_fashion_mnist` (default cache folder ``.../metricssl/mnist``).

    Example:
        >>> from metricssl.data.mnist import load_mnist
        >>> images, labels = load_mnist(split="test", download=True)  # doctest: +SKIP
    """
    return load_idx_dataset(MNIST, root, split, download, cache_dir, verify, progress)


def load_idx_dataset(
    spec: IdxDataset,
    root: str | os.PathLike | None,
    split: str,
    download: bool,
    cache_dir: str | os.PathLike | None,
    verify: bool,
    progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find (or download), check and parse one split of an IDX dataset."""
    check_choice("split", split, tuple(spec.splits))
    for name, flag in (("download", download), ("verify", verify), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}")
    cache = dataset_cache_dir(spec.name, cache_dir)
    search = [Path(root).expanduser()] if root is not None else []
    search += [Path(d) for d in spec.system_dirs] + [cache]

    arrays = []
    for file in spec.splits[split]:
        path = _find(file, search)
        if path is None and download:
            path = _download(spec, file, cache, progress)
        if path is None:
            raise FileNotFoundError(
                f"{spec.name}: {file.name}(.gz) not found in "
                + ", ".join(str(d) for d in search)
                + "; pass root=<folder with the IDX files> or download=True"
            )
        raw = read_idx_bytes(path)
        if verify:
            _verify_local(path, raw, file)
        arrays.append((path, parse_idx(raw, source=str(path))))
    (images_path, images), (labels_path, labels) = arrays
    return _check_and_convert(spec, images_path, images, labels_path, labels)


def _find(file: IdxFile, search: list[Path]) -> Path | None:
    for folder in search:
        for candidate in (folder / f"{file.name}.gz", folder / file.name):
            if candidate.is_file():
                return candidate
    return None


def _download(spec: IdxDataset, file: IdxFile, cache: Path, progress: bool) -> Path:
    errors = []
    for base in spec.mirrors:
        url = f"{base}{file.name}.gz"
        try:
            return download_url(
                url, cache / f"{file.name}.gz", md5=file.md5, sha256=file.sha256, progress=progress
            )
        except (urllib.error.URLError, OSError, ValueError) as err:
            errors.append(f"{url}: {err}")
    raise RuntimeError(f"{spec.name}: could not download {file.name}.gz:\n  " + "\n  ".join(errors))


def _verify_local(path: Path, raw: bytes, file: IdxFile) -> None:
    if file.content_sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != file.content_sha256:
            raise ValueError(
                f"{path}: content SHA-256 {digest} does not match the published {file.name} "
                f"({file.content_sha256}); the file is corrupt or a different dataset "
                f"(pass verify=False to load modified files on purpose)"
            )
    elif path.name.endswith(".gz"):
        verify_checksums(path, md5=file.md5, sha256=file.sha256)


def _check_and_convert(spec, images_path, images, labels_path, labels):
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, {spec.image_shape[0]}, "
            f"{spec.image_shape[1]}), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected a 1D uint8 label file, got {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() >= spec.n_classes:
        raise ValueError(f"{labels_path}: label {labels.max()} is outside 0..{spec.n_classes - 1}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
