"""resolve_data: data in any form users have -> :class:`~metricssl.data.image_data.ImageData`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from ..core.validation import check_bool, check_number
from .array_dataset import ArrayDataset
from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .image_data import Collate, ImageData
from .image_files import ImageFiles
from .image_folder import ImageFolder
from .items import PrepareItem, split_item
from .manifest import MANIFEST_SUFFIXES, ManifestDataset
from .mnist import load_fashion_mnist, load_mnist


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
        >>> from metricssl.data.resolve import load_dataset
        >>> images, labels = load_dataset("digits", "test")
        >>> images.shape
        torch.Size([359, 1, 8, 8])
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, an image folder, "
            f"a manifest, an (images, labels) pair or a torch Dataset"
        )
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return DATASETS[name](data_dir, split, download)


def resolve_data(
    dataset,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    download: bool = False,
    num_workers: int = 0,
    *,
    image_size: int | tuple[int, int] | None = None,
    mode: str | None = None,
    batch_size: int | None = None,
    steps: int | None = None,
) -> ImageData:
    """Turn what the user passed as ``dataset`` into :class:`ImageData`.

    Accepted:

    * a name from :data:`DATASETS` (``split``, ``data_dir``, ``download`` apply);
    * a folder of images: ``root/<class>/<image>`` (labelled by sub-folder) or ``root/<image>``
      (unlabelled);
    * a ``.csv`` or ``.parquet`` manifest with a ``path`` column and optionally ``label``
      (:class:`~metricssl.data.manifest.ManifestDataset`);
    * an ``(images, labels)`` pair (labels may be None) of (N, C, H, W) tensors or arrays, or
      an :class:`~metricssl.data.array_dataset.ArrayDataset`;
    * any map-style Dataset whose items are PIL images, HWC numpy arrays or CHW tensors, alone,
      as ``(image, label, ...)`` or in a dict (``image``/``label`` keys);
    * an IterableDataset of such items (batched here by ``batch_size``; an epoch is ``steps``
      batches, or its length if it has one);
    * a DataLoader, used as given (its batches, its batch size; ``steps`` batches per epoch,
      by default its length);
    * an :class:`ImageData` (returned as it is).

    Labels come from the source without reading an image: an image folder's sub-folders, a
    manifest's ``label`` column, a Dataset's ``targets`` or ``labels`` attribute (torchvision's
    convention). Any other Dataset whose items carry labels gets them read on first use of
    ``ImageData.labels`` (every item once), never when it is built.

    Images of files and Datasets are decoded, converted and resized in the DataLoader
    workers (``num_workers``); in-memory images are converted a batch at a time.

    Args:
        dataset: one of the above.
        data_dir, split, download: where and which split of a named dataset.
        num_workers: DataLoader worker processes that decode and resize (0: in this process).
        image_size: resize every image to ``image_size`` (an int for a square, or (height,
            width)): scaled so it covers that size (aspect ratio kept, bilinear, antialiased),
            then the centre is cropped; nothing is padded. None keeps the images' own size
            (they must all have one size then).
        mode: ``"RGB"`` (3 channels) or ``"L"`` (grey, 1 channel); None keeps the images'
            channels (files are read as RGB).
        batch_size: images per batch of an IterableDataset (required for one); for a
            DataLoader, the batch size the caller expects (must equal the loader's).
        steps: batches per epoch of an IterableDataset or a DataLoader (required for one
            without a length).

    Example:
        >>> from metricssl.data import resolve_data
        >>> data = resolve_data("digits", split="test", image_size=16, mode="RGB")
        >>> len(data), data.input_shape
        (359, (3, 16, 16))
    """
    check_number("num_workers", num_workers, low=0, integer=True)
    check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
    check_number("steps", steps, low=1, integer=True, allow_none=True)
    check_bool("download", download)
    prepare = PrepareItem(mode, image_size)
    if isinstance(dataset, ImageData):
        if prepare.changes_images:
            raise ValueError(
                "image_size and mode apply when data is resolved; this ImageData already is: "
                "resolve its source again with them"
            )
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        return _checked(_from_path(dataset, data_dir, split, download, num_workers, prepare))
    if isinstance(dataset, tuple) and len(dataset) == 2:
        dataset = ArrayDataset(*dataset)
    if isinstance(dataset, ArrayDataset):
        return _checked(ImageData(dataset.images, dataset.labels, prepare=prepare))
    if isinstance(dataset, DataLoader):
        return _checked(_from_loader(dataset, prepare, batch_size, steps))
    if isinstance(dataset, IterableDataset):
        return _checked(_from_iterable(dataset, prepare, batch_size, steps, num_workers))
    if isinstance(dataset, Dataset):
        return _checked(_from_dataset(dataset, prepare, num_workers))
    raise TypeError(
        f"dataset must be a name, an image folder or manifest path, an (images, labels) pair, "
        f"a torch Dataset, IterableDataset or DataLoader; got {type(dataset).__name__}"
    )


def _from_path(path, data_dir, split, download, num_workers, prepare) -> ImageData:
    if isinstance(path, str) and path in DATASETS:
        images, labels = load_dataset(path, split, data_dir, download)
        return ImageData(images, labels, prepare=prepare)
    # Files are decoded straight into the requested channels; the size is fitted afterwards.
    file_mode, sized = prepare.mode or "RGB", PrepareItem(None, prepare.size)
    if Path(path).is_dir():
        return _from_dataset(ImageFolder(path, mode=file_mode), sized, num_workers)
    if Path(path).suffix.lower() in MANIFEST_SUFFIXES:
        return _from_dataset(ManifestDataset(path, mode=file_mode), sized, num_workers)
    raise ValueError(
        f"unknown dataset {str(path)!r}: not one of {sorted(DATASETS)}, an existing image "
        f"folder or a {'/'.join(MANIFEST_SUFFIXES)} manifest"
    )


def _from_dataset(dataset: Dataset, prepare: PrepareItem, num_workers: int) -> ImageData:
    if len(dataset) == 0:
        raise ValueError("dataset: the dataset is empty")
    labels = _known_labels(dataset)
    # One item tells whether items carry labels (decoding one image, not all).
    lazy = labels is None and split_item(dataset[0])[1] is not None
    return ImageData(None, labels, dataset, num_workers, prepare=prepare, lazy_labels=lazy)


def _known_labels(dataset: Dataset) -> torch.Tensor | None:
    """Labels the dataset knows without reading an image, or None."""
    if isinstance(dataset, ImageFiles):
        return dataset.targets if dataset.labelled else None
    if isinstance(dataset, Subset):
        # random_split's pieces: the parent's labels at the subset's indices.
        parent = _known_labels(dataset.dataset)
        return None if parent is None else parent[torch.as_tensor(dataset.indices)]
    for name in ("targets", "labels"):
        values = getattr(dataset, name, None)
        if values is None or callable(values):
            continue
        try:
            labels = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError):
            continue
        integer = not (labels.is_floating_point() or labels.is_complex())
        if labels.ndim == 1 and len(labels) == len(dataset) and integer:
            return labels.to(torch.int64)
    return None


def _from_loader(loader: DataLoader, prepare, batch_size, steps) -> ImageData:
    if prepare.changes_images:
        raise ValueError(
            "image_size and mode cannot change a DataLoader's batches: it is used as given; "
            "resize in its dataset's transform (or pass the dataset instead)"
        )
    own = loader.batch_size
    if own is not None and batch_size is not None and own != batch_size:
        raise ValueError(
            f"batch_size {batch_size} differs from the DataLoader's batch_size {own}; leave "
            f"batch_size out to train with the loader's batches"
        )
    if own is None and batch_size is None:
        raise ValueError(
            "batch_size: the DataLoader has a batch sampler; pass the batch size it gives"
        )
    return ImageData(
        None, None, stream=loader, steps=_steps(loader, steps), batch_size=own or batch_size
    )


def _from_iterable(dataset, prepare, batch_size, steps, num_workers) -> ImageData:
    if batch_size is None:
        raise ValueError("batch_size: an IterableDataset is batched here; pass its batch size")
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=Collate(prepare),
        persistent_workers=num_workers > 0,
    )
    return ImageData(None, None, stream=loader, steps=_steps(loader, steps), batch_size=batch_size)


def _steps(loader: DataLoader, steps: int | None) -> int:
    if steps is not None:
        return steps
    try:
        length = len(loader)
    except TypeError:
        length = 0
    if length < 1:
        raise ValueError("steps: the stream has no length; pass steps, the batches of one epoch")
    return length


def _checked(data: ImageData) -> ImageData:
    if len(data) == 0:
        raise ValueError("dataset: the dataset is empty")
    if data.images is not None:
        if data.images.ndim != 4:
            raise ValueError(
                f"images must have shape (N, C, H, W) (one (C, H, W) tensor per item); got "
                f"{tuple(data.images.shape)}"
            )
        if data.images.dtype != torch.uint8 and not data.images.is_floating_point():
            raise TypeError(
                f"images must be uint8 (0..255) or floating point, got {data.images.dtype}"
            )
    data.input_shape  # noqa: B018 -- reads (and checks) the first item or batch now
    if data.labels_known and data.labels is not None:
        data.labels = data.labels.to(torch.int64)
    return data
