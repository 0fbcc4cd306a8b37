"""Training data for the Trainer: named datasets, image folders, tensors or any Dataset."""

from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.array_dataset import ArrayDataset
from ..data.cifar import load_cifar10, load_cifar100
from ..data.digits import load_digits
from ..data.image_folder import ImageFolder
from ..data.mnist import load_fashion_mnist, load_mnist


def _digits(root, split, download):
    # sklearn's digits ship with scikit-learn: nothing to find or download.
    return load_digits(split)


def _idx(loader):
    def load(root, split, download):
        return loader(root, split=split, download=download)

    return load


DATASETS: dict[str, Callable] = {
    "digits": _digits,
    "fashion-mnist": _idx(load_fashion_mnist),
    "mnist": _idx(load_mnist),
    "cifar10": _idx(load_cifar10),
    "cifar100": _idx(load_cifar100),
}


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of a named dataset as ``(uint8 (N, C, H, W) images, int64 labels)``.

    Args:
        name: one of :data:`DATASETS` (``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``,
            ``cifar100``).
        split: ``"train"`` or ``"test"``.
        data_dir: a folder holding the dataset's files (see :mod:`metricssl.data`).
        download: fetch missing files into the cache folder.

    Example:
        >>> from metricssl.ssl.datasets import load_dataset
        >>> images, labels = load_dataset("digits", "test")
        >>> images.shape
        torch.Size([359, 1, 8, 8])
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, an image folder, "
            f"an (images, labels) pair or a torch Dataset"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS[name](data_dir, split, download)


@dataclass
class ImageData:
    """Images in memory (``images``) or behind a Dataset (``dataset``), with optional labels.

    ``batches(indices, batch_size, device)`` yields uint8 (B, C, H, W) image batches and label
    batches (or None) in the order of ``indices``, on ``device`` (default: where they are).
    In-memory images are gathered by indexing (no per-item Python work). A Dataset goes
    through one DataLoader with ``num_workers`` processes, kept for every later call, so the
    workers start once, not once per epoch. Towards a CUDA device batches are gathered into
    pinned memory and copied without blocking the host.

    The items of a Dataset are read with Python's, NumPy's and torch's CPU random generators
    seeded from the batch's indices (and restored afterwards), so a Dataset with random
    transforms gives the same batch whatever ``num_workers`` is, which worker reads it, or
    whether the run was resumed.
    """

    images: torch.Tensor | None
    labels: torch.Tensor | None
    dataset: Dataset | None = None
    num_workers: int = 0
    _loader: DataLoader | None = field(default=None, init=False, repr=False, compare=False)
    _loader_busy: bool = field(default=False, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.dataset)

    @property
    def input_shape(self) -> tuple[int, ...]:
        first = self.images[0] if self.images is not None else _item_image(self.dataset[0])
        return tuple(first.shape)

    def subset(self, indices: torch.Tensor) -> ImageData:
        labels = None if self.labels is None else self.labels[indices]
        if self.images is not None:
            return ImageData(self.images[indices], labels)
        subset = torch.utils.data.Subset(self.dataset, indices.tolist())
        return ImageData(None, labels, subset, self.num_workers)

    def batches(
        self,
        indices: torch.Tensor,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        device = None if device is None else torch.device(device)
        pin = device is not None and device.type == "cuda"
        chunks = torch.split(indices, batch_size)
        if self.images is not None:
            for idx in chunks:
                images = _gather(self.images, idx, pin)
                labels = None if self.labels is None else _gather(self.labels, idx, pin)
                yield _moved(images, device), _moved(labels, device)
            return
        batch_list = [_SeededBatch(c.tolist()) for c in chunks]
        # One DataLoader serves every pass; a pass that starts while another is still being
        # read (nested use) gets a loader of its own, as resetting the shared one would cut
        # the other short.
        nested = self._loader_busy
        loader = self._make_loader(pin) if nested else self._shared_loader(pin)
        loader.batch_sampler.batches = batch_list
        if not nested:
            self._loader_busy = True
        try:
            for images, idx in zip(loader, chunks):
                labels = None if self.labels is None else _gather(self.labels, idx, pin)
                yield _moved(images, device), _moved(labels, device)
        finally:
            if not nested:
                self._loader_busy = False

    def _shared_loader(self, pin: bool) -> DataLoader:
        if self._loader is None or self._loader.pin_memory != pin:
            self._loader = self._make_loader(pin)
        return self._loader

    def _make_loader(self, pin: bool) -> DataLoader:
        return DataLoader(
            _SeededItems(self.dataset),
            batch_sampler=_PassBatches(),
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=pin,
            persistent_workers=self.num_workers > 0,
            # Its own generator: every pass draws the workers' base seed from it, which would
            # otherwise advance torch's global generator (and the model's random numbers).
            generator=torch.Generator().manual_seed(0),
        )


def _gather(source: torch.Tensor, idx: torch.Tensor, pin: bool) -> torch.Tensor:
    """``source[idx]``, written straight into pinned memory when ``pin``: a copy from there
    to the GPU runs without blocking the host (pinned blocks come from torch's caching host
    allocator, which reuses one only after its copy has finished)."""
    if not pin:
        return source[idx]
    out = torch.empty((len(idx), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
    return torch.index_select(source, 0, idx, out=out)


def _moved(x: torch.Tensor | None, device: torch.device | None) -> torch.Tensor | None:
    return x if x is None or device is None else x.to(device, non_blocking=True)


class _SeededBatch(list):
    """A batch of dataset indices and the seed its items are read with."""

    def __init__(self, indices: list[int]):
        super().__init__(indices)
        digest = hashlib.blake2b(struct.pack(f"<{len(indices)}q", *indices), digest_size=8)
        self.seed = int.from_bytes(digest.digest(), "little") >> 1  # below 2**63


class _PassBatches(Sampler):
    """The batches of the current pass, set before each pass: the DataLoader and its
    persistent workers stay, the order changes."""

    def __init__(self):
        self.batches: list[_SeededBatch] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _SeededItems(Dataset):
    """The items of ``dataset``, a batch at a time, with the random generators a transform
    may draw from seeded by the batch (and restored afterwards, which matters when the
    DataLoader reads in the main process)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def __getitems__(self, batch: _SeededBatch) -> list:
        states = random.getstate(), np.random.get_state(), torch.default_generator.get_state()
        random.seed(batch.seed)
        np.random.seed(batch.seed % 2**32)
        torch.default_generator.manual_seed(batch.seed)
        try:
            return [self.dataset[i] for i in batch]
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.default_generator.set_state(states[2])


def _item_image(item) -> torch.Tensor:
    return item[0] if isinstance(item, (tuple, list)) else item


def _collate(items) -> torch.Tensor:
    images = [_item_image(x) for x in items]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) != 1:
        raise ValueError(
            f"images in one batch differ in shape ({sorted(shapes)}); give the dataset a "
            f"transform that resizes them to one size"
        )
    return torch.stack(images)


def _dataset_labels(dataset: Dataset) -> torch.Tensor | None:
    if isinstance(dataset, ImageFolder):
        return dataset.targets if dataset.labelled else None
    item = dataset[0]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return None


def resolve_data(
    dataset,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    num_workers: int = 0,
) -> ImageData:
    """Turn what the user passed as ``dataset`` into :class:`ImageData`.

    Accepted: a name from :data:`DATASETS`; a path to an image folder (``root/<class>/<img>``
    or ``root/<img>``); an ``(images, labels)`` pair (labels may be None) of tensors or
    arrays; an :class:`~metricssl.data.ArrayDataset`; any map-style Dataset whose items are
    images or ``(image, label)``.
    """
    if isinstance(dataset, (str, os.PathLike)):
        if isinstance(dataset, str) and dataset in DATASETS:
            images, labels = load_dataset(dataset, split, data_dir, download)
            return _checked(ImageData(images, labels))
        if Path(dataset).is_dir():
            return _checked(_from_dataset(ImageFolder(dataset), num_workers))
        raise ValueError(
            f"unknown dataset {str(dataset)!r}: not one of {sorted(DATASETS)} and not an "
            f"existing image folder"
        )
    if isinstance(dataset, tuple) and len(dataset) == 2:
        ds = ArrayDataset(*dataset)
        return _checked(ImageData(ds.images, ds.labels))
    if isinstance(dataset, ArrayDataset):
        return _checked(ImageData(dataset.images, dataset.labels))
    if isinstance(dataset, Dataset):
        return _checked(_from_dataset(dataset, num_workers))
    raise TypeError(
        f"dataset must be a name, an image folder path, an (images, labels) pair or a "
        f"torch Dataset; got {type(dataset).__name__}"
    )


def _from_dataset(dataset: Dataset, num_workers: int) -> ImageData:
    if len(dataset) == 0:
        raise ValueError("the dataset is empty")
    return ImageData(None, _dataset_labels(dataset), dataset, num_workers)


def _checked(data: ImageData) -> ImageData:
    if len(data) == 0:
        raise ValueError("the dataset is empty")
    first = data.images if data.images is not None else _item_image(data.dataset[0])[None]
    if first.ndim != 4:
        raise ValueError(
            f"images must have shape (N, C, H, W) (one (C, H, W) tensor per item); got "
            f"{tuple(first.shape) if data.images is not None else tuple(first.shape[1:])}"
        )
    if first.dtype != torch.uint8 and not first.is_floating_point():
        raise TypeError(f"images must be uint8 (0..255) or floating point, got {first.dtype}")
    if data.labels is not None:
        data.labels = data.labels.to(torch.int64)
    return data
