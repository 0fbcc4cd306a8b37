"""Training data for the Trainer: named datasets, image folders, tensors or any Dataset."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

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

    ``batches(indices, batch_size)`` yields uint8 (B, C, H, W) image batches and label
    batches (or None) in the order of ``indices``; in-memory images are gathered by indexing
    (no per-item Python work), a Dataset goes through a DataLoader with ``num_workers``.
    """

    images: torch.Tensor | None
    labels: torch.Tensor | None
    dataset: Dataset | None = None
    num_workers: int = 0

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
        self, indices: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        chunks = torch.split(indices, batch_size)
        if self.images is not None:
            for idx in chunks:
                yield self.images[idx], None if self.labels is None else self.labels[idx]
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=[c.tolist() for c in chunks],
            num_workers=self.num_workers,
            collate_fn=_collate,
        )
        for images, idx in zip(loader, chunks):
            yield images, None if self.labels is None else self.labels[idx]


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
