"""Training data for the Trainer: the data layer of :mod:`metricssl.data`, where it lives.

Kept at this path for existing imports: :func:`resolve_data` turns named datasets, image
folders, manifests, tensors, any Dataset, IterableDataset or DataLoader into
:class:`ImageData`.
"""

from ..data.image_data import ImageData
from ..data.resolve import DATASETS, load_dataset, resolve_data

__all__ = ["DATASETS", "ImageData", "load_dataset", "resolve_data"]
