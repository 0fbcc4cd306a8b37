"""Self-supervised (and supervised metric-learning) training: methods and one Trainer.

    >>> from metricssl.ssl import Trainer  # doctest: +SKIP
    >>> trainer = Trainer(method="simclr", dataset="fashion-mnist", out="runs/x")  # doctest: +SKIP
    >>> trainer.fit()  # doctest: +SKIP
    >>> encoder = trainer.method.backbone  # doctest: +SKIP

Methods (one module each, composable from any backbone and heads): SimCLR, MoCo (v2), BYOL,
SimSiam, BarlowTwins, VICReg, Supervised. :data:`METHODS` holds their defaults for small
images; :func:`build_method` builds one by name; :func:`load_checkpoint` rebuilds a trained
one from ``OUT/checkpoints/last.pt``; :func:`embed_dataset` embeds clean images with it.
"""

from .barlow_twins import BarlowTwins
from .byol import BYOL
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .datasets import DATASETS, load_dataset
from .embed import embed_dataset
from .lars import LARS
from .method import Batch, SSLMethod
from .moco import MoCo
from .monitor import CollapseWarning
from .registry import BACKBONES, METHODS, MethodSpec, build_method
from .schedule import WarmupCosineSchedule
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .trainer import Trainer
from .vicreg import VICReg

__all__ = [
    "BACKBONES",
    "BYOL",
    "DATASETS",
    "LARS",
    "METHODS",
    "BarlowTwins",
    "Batch",
    "CheckpointError",
    "CollapseWarning",
    "MethodSpec",
    "MoCo",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "Supervised",
    "Trainer",
    "VICReg",
    "WarmupCosineSchedule",
    "build_method",
    "embed_dataset",
    "load_checkpoint",
    "load_dataset",
    "read_checkpoint",
]
