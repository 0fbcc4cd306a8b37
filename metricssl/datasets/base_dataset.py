"""PML's ``BaseDataset``: a retrieval benchmark on disk, read as ``(PIL image, int label)``.

A dataset lives in ``root`` exactly as its archives extract. With ``download=True`` and a
missing or empty ``root`` the archives are fetched with :func:`metricssl.data.download_url`
(checked against the publisher's MD5 where one is published), extracted into a staging
folder inside ``root``, checked for the metadata files the dataset reads, and only then
moved into ``root``: a failed or interrupted download leaves ``root`` empty, so the next
``download=True`` starts again instead of trusting half an archive. A non-empty ``root`` is
never downloaded into, as in PML.
"""

from __future__ import annotations

import gzip
import numbers
import os
import shutil
import tarfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np
from torch.utils.data import Dataset

from ..data.download import download_url

# Staging folder inside ``root`` for a download in progress; hidden, and ours by name.
STAGING = ".metricssl-download"


@dataclass(frozen=True)
class Archive:
    """One file a dataset downloads: where from, what to call it, how to check and open it.

    ``md5`` is None where the publisher gives no checksum; such an archive is trusted only
    after its own CRCs pass on extraction and it holds the files the dataset needs.
    """

    url: str
    filename: str
    md5: str | None
    kind: str  # "tar" (any compression tarfile reads) or "zip"


class BaseDataset(Dataset, ABC):
    """A labelled image dataset in ``root``, split by class into train and test.

    Subclasses set ``self.paths`` and ``self.labels`` in :meth:`generate_split` and fetch
    their files in :meth:`download_and_remove`; PML-style subclasses keep working unchanged.
    Items are ``(image, label)``: the image as Pillow opens it (its mode as stored; decoded
    now, so no file stays open), passed through ``transform``; the label an ``int``,
    passed through ``target_transform``.

    Args:
        root: the dataset folder.
        split: one of :meth:`get_available_splits` (``"train"``, ``"test"``,
            ``"train+test"``).
        transform: optional callable applied to each PIL image (e.g. a torchvision
            transform).
        target_transform: optional callable applied to each label.
        download: when ``root`` is missing or empty, download the dataset into it first.

    Example:
        >>> from metricssl.datasets import CUB
        >>> train = CUB(root="data/cub", split="train", download=True)  # doctest: +SKIP
        >>> image, label = train[0]  # doctest: +SKIP
    """

    paths: list[str]
    labels: list[int]

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train+test",
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        download: bool = False,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}")
        for name, value in (("transform", transform), ("target_transform", target_transform)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
        # PML tests ``if download``: ints and numpy bools are accepted like bools.
        if not isinstance(download, (numbers.Integral, np.bool_)):
            raise TypeError(f"download must be a bool, got {download!r}")
        splits = self.get_available_splits()
        if split not in splits:
            # Checked before any download: a wrong split should not cost a 100 GB fetch.
            raise ValueError(f"split must be one of {', '.join(splits)}; got {split!r}")
        self.root = root
        if download:
            if not os.path.isdir(root):
                os.makedirs(root, exist_ok=False)
            if not _entries(root):
                self.download_and_remove()
        elif not os.path.isdir(root):
            raise ValueError(
                f"{type(self).__name__}: root {os.fspath(root)!r} does not exist. Pass "
                f"download=True to download the dataset into it, or point root at the folder "
                f"that holds the extracted files."
            )
        self.transform = transform
        self.target_transform = target_transform
        self.split = split
        self.generate_split()

    @abstractmethod
    def generate_split(self) -> None:
        """Set ``self.paths`` (image files) and ``self.labels`` (ints) for ``self.split``."""

    @abstractmethod
    def download_and_remove(self) -> None:
        """Fetch the dataset into the (empty) ``self.root`` and remove the archives."""

    def get_available_splits(self) -> list[str]:
        return ["train", "test", "train+test"]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx):
        image = _open_image(self.paths[idx])
        label = self.labels[idx]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def _open_metadata(self, *parts: str) -> IO[str]:
        """A metadata file under root, opened as text; a clear error when it is missing."""
        path = os.path.join(self.root, *parts)
        try:
            return open(path, encoding="utf-8")
        except FileNotFoundError:
            raise self._missing(path) from None

    def _metadata_lines(self, *parts: str) -> Iterator[tuple[int, str]]:
        """(1-based line number, line without its newline) of a metadata file under root."""
        with self._open_metadata(*parts) as f:
            for number, line in enumerate(f, start=1):
                yield number, line.rstrip("\n")

    def _missing(self, path: str) -> FileNotFoundError:
        return FileNotFoundError(
            f"{type(self).__name__}: {path} not found. root {os.fspath(self.root)!r} should "
            f"hold the dataset as its archives extract; pass download=True with a missing or "
            f"empty root to download it."
        )

    def _malformed(self, path_parts: Sequence[str], number: int, line: str, expected: str):
        path = os.path.join(self.root, *path_parts)
        return ValueError(f"{path}, line {number}: expected {expected}, got {line!r}")


def is_int(text: str) -> bool:
    """Whether ``int(text)`` parses (metadata columns are read with ``int`` as in PML)."""
    try:
        int(text)
    except ValueError:
        return False
    return True


def _entries(root: str | os.PathLike) -> list[str]:
    # A staging folder left by an interrupted download does not make root "non-empty".
    return [name for name in os.listdir(root) if name != STAGING]


def _open_image(path):
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError(
            "reading dataset images needs the optional package Pillow: pip install pillow"
        ) from err
    image = Image.open(path)
    # Decoding now closes the file (single-frame images): no descriptor per item stays open.
    image.load()
    return image


def fetch_archives(
    root: str | os.PathLike,
    archives: Sequence[Archive],
    required: Sequence[str],
    *,
    progress: bool = True,
) -> None:
    """Download, check and extract ``archives`` into ``root``, all or nothing.

    Each archive is downloaded into a staging folder inside ``root`` (MD5 checked where
    known), extracted there and deleted; once every archive is extracted and the
    ``required`` files (paths relative to ``root``) exist, the extracted entries move into
    ``root``. On any error the staging folder is removed and ``root`` is left as it was.

    Raises:
        ValueError: a checksum mismatch, a corrupt archive, an unsafe member path, or an
            archive without the files the dataset needs.
    """
    staging = os.path.join(root, STAGING)
    extracted = os.path.join(staging, "extracted")
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left behind
    try:
        os.makedirs(extracted)
        for archive in archives:
            path = os.path.join(staging, archive.filename)
            download_url(
                archive.url,
                path,
                md5=archive.md5,
                progress=progress,
                allow_unverified=archive.md5 is None,
            )
            _extract(archive, path, extracted)
            os.remove(path)
        missing = [name for name in required if not os.path.isfile(os.path.join(extracted, name))]
        if missing:
            sources = ", ".join(archive.url for archive in archives)
            raise ValueError(
                f"the downloaded archives ({sources}) do not hold {', '.join(missing)}: "
                f"not the expected files"
            )
        for name in os.listdir(extracted):
            os.replace(os.path.join(extracted, name), os.path.join(root, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(archive: Archive, path: str, dest: str) -> None:
    try:
        if archive.kind == "zip":
            # zipfile drops absolute and ".." parts of member names, and checks each
            # member's CRC as it reads it.
            with zipfile.ZipFile(path) as zf:
                zf.extractall(dest)
        else:
            # Stream mode: one pass, never a seek back (a 120 GB archive is read once);
            # every member is checked before it is written.
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    _check_member(member, archive)
                    tar.extract(member, dest, **_TAR_FILTER)
    except _CORRUPT as err:
        raise ValueError(f"{archive.filename} from {archive.url} is corrupt: {err}") from err


# What a damaged archive raises while it is read (disk errors are OSErrors and pass through).
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error)
# Python versions with extraction filters get the "data" filter as a second guard.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(member: tarfile.TarInfo, archive: Archive) -> None:
    parts = member.name.replace("\\", "/").split("/")
    if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
        raise ValueError(
            f"{archive.filename} from {archive.url} holds {member.name!r}: only plain files "
            f"and folders inside the dataset folder are extracted"
        )
