"""The data layer: data in every form users have, read one way by training, embedding,
evaluation, indexing and plotting.

Public API (what the Trainer and the command line call)::

    resolve_data(dataset, data_dir=None, split="train", download=False, num_workers=0, *,
                 image_size=None, mode=None, batch_size=None, steps=None) -> ImageData

``dataset`` is a name from :data:`DATASETS` (``digits``, ``fashion-mnist``, ``mnist``,
``cifar10``, ``cifar100``), a folder of images (``root/<class>/<img>`` labelled,
``root/<img>`` unlabelled), a ``.csv``/``.parquet`` manifest (``path`` column, optional
``label``; relative paths relative to the manifest), an ``(images, labels)`` pair of tensors or
arrays, any map-style Dataset (items: PIL images, HWC uint8 arrays or CHW tensors, alone, as
``(image, label)`` or a dict), an IterableDataset (needs ``batch_size``; ``steps`` batches per
epoch), a DataLoader (used as given), or an :class:`ImageData`. ``image_size`` (int or (h, w))
resizes so the image covers the size, then crops the centre (no padding); ``mode`` is
``"RGB"``/``"L"``; both run in the DataLoader workers.

:class:`ImageData`: ``len(data)``, ``data.input_shape`` (C, H, W), ``data.labels`` (int64 or
None), ``data.labels_known``, ``data.labelled``, ``data.random_access`` (False for streams),
``data.subset(indices)``, ``data.batches(indices, batch_size, device=None)`` -> iterator of
``(uint8/float (B, C, H, W) images, int64 (B,) labels or None)``.

Also: built-in sets as uint8 image tensors with int64 labels -- sklearn's digits (always
available), MNIST and Fashion-MNIST (IDX files: a local copy, Debian's dataset-fashion-mnist,
or a checksummed download), CIFAR-10/100 (pickle batches, read with a restricted unpickler);
:class:`ImageFolder` and :class:`ManifestDataset` (labels without decoding);
:class:`ArrayDataset`.

Example:
    >>> from metricssl.data import resolve_data
    >>> data = resolve_data("digits", split="test")
    >>> len(data), data.input_shape
    (359, (1, 8, 8))
"""

from .array_dataset import ArrayDataset
from .cache import cache_root, dataset_cache_dir
from .cifar import CIFAR10_CLASSES, load_cifar10, load_cifar100
from .digits import load_digits
from .download import download_url, file_digest, verify_checksums
from .idx import read_idx
from .image_data import ImageData
from .image_folder import ImageFolder, read_image
from .items import PrepareItem, fit_size, to_chw
from .manifest import ManifestDataset
from .mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from .resolve import DATASETS, load_dataset, resolve_data
from .splits import stratified_split

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "DATASETS",
    "ArrayDataset",
    "ImageData",
    "ImageFolder",
    "ManifestDataset",
    "PrepareItem",
    "cache_root",
    "dataset_cache_dir",
    "download_url",
    "file_digest",
    "fit_size",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "read_image",
    "resolve_data",
    "stratified_split",
    "to_chw",
    "verify_checksums",
]
