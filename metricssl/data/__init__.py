"""Datasets as uint8 image tensors with int64 labels.

sklearn's digits (always available), MNIST and Fashion-MNIST (IDX files: a local copy,
Debian's dataset-fashion-mnist, or a checksummed download), CIFAR-10/100 (pickle batches,
read with a restricted unpickler), in-memory arrays and image folders.
"""

from .array_dataset import ArrayDataset
from .cache import cache_root, dataset_cache_dir
from .cifar import CIFAR10_CLASSES, load_cifar10, load_cifar100
from .digits import load_digits
from .download import download_url, file_digest, verify_checksums
from .idx import read_idx
from .image_folder import ImageFolder, read_image
from .mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_fashion_mnist, load_mnist
from .splits import stratified_split

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "ArrayDataset",
    "ImageFolder",
    "cache_root",
    "dataset_cache_dir",
    "download_url",
    "file_digest",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "read_idx",
    "read_image",
    "stratified_split",
    "verify_checksums",
]
