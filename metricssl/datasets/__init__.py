"""PML's retrieval benchmarks at PML's import path (``pytorch_metric_learning.datasets``):
CUB-200-2011, Cars196, iNaturalist 2018 and Stanford Online Products, read from their
extracted archives as ``(PIL image, int label)`` with PML's class-disjoint splits, and
downloaded (checksums verified where published) with ``download=True``.

Example:
    >>> from metricssl.datasets import CUB
    >>> train = CUB(root="data/cub", split="train", download=True)  # doctest: +SKIP
"""

from .base_dataset import BaseDataset
from .cars196 import Cars196
from .cub import CUB
from .inaturalist2018 import INaturalist2018
from .sop import StanfordOnlineProducts

__all__ = ["CUB", "BaseDataset", "Cars196", "INaturalist2018", "StanfordOnlineProducts"]
