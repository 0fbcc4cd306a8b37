"""Self-supervised (and supervised metric-learning) training: methods and one Trainer.

    >>> from metricssl.ssl import Trainer  # doctest: +SKIP
    >>> trainer = Trainer(method="simclr", dataset="fashion-mnist", out="runs/x")  # doctest: +SKIP
    >>> trainer.fit()  # doctest: +SKIP
    >>> encoder = trainer.method.backbone  # doctest: +SKIP

Methods (one module each, composable from any backbone and heads): SimCLR, MoCo (v2), BYOL,
SimSiam, BarlowTwins, VICReg, SwAV, DINO, DeepCluster, NPID, PIRL, RotNet, Jigsaw, ContextEncoder,
DenoisingAutoencoder, VAE, Supervised, TiCo, MMCR, MoCoV3, NNCLR, MAE, DCL. :data:`METHODS` holds their typed configs
(``SimCLRConfig``, ..., one source of each method's defaults) and training defaults for small
images; :func:`build_method` builds one by name; :func:`build_model`,
:func:`build_optimizer` and :func:`build_schedule` are the Trainer's builders; :func:`load_checkpoint` rebuilds a trained
one from ``OUT/checkpoints/last.pt``; :func:`embed_dataset` embeds clean images with it.
"""

from .barlow_twins import BarlowTwins
from .builders import build_model, build_optimizer, build_schedule, training_settings
from .byol import BYOL
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from .clusterfit import clusterfit_labels
from .datasets import DATASETS, load_dataset
from .dcl import DCL
from .deepcluster import DeepCluster
from .denoising_autoencoder import DenoisingAutoencoder
from .dino import DINO
from .embed import embed_dataset
from .inpainting import ContextEncoder
from .jigsaw import Jigsaw
from .lars import LARS
from .mae import MAE
from .memory_bank import MemoryBank
from .method import Batch, MethodConfig, SSLMethod
from .mmcr import MMCR
from .moco import MoCo
from .moco_v3 import MoCoV3
from .monitor import CollapseWarning
from .nnclr import NNCLR
from .npid import NPID
from .pirl import PIRL
from .registry import (
    ALIASES,
    BACKBONES,
    METHODS,
    MethodSpec,
    TrainingDefaults,
    build_method,
    method_config,
)
from .rotnet import RotNet
from .schedule import WarmupCosineSchedule
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .swav import SwAV
from .tico import TiCo
from .trainer import Trainer
from .vae import VAE
from .vicreg import VICReg

__all__ = [
    "ALIASES",
    "BACKBONES",
    "BYOL",
    "DATASETS",
    "DCL",
    "DINO",
    "LARS",
    "MAE",
    "METHODS",
    "MMCR",
    "NNCLR",
    "NPID",
    "PIRL",
    "VAE",
    "BarlowTwins",
    "Batch",
    "CheckpointError",
    "CollapseWarning",
    "ContextEncoder",
    "DeepCluster",
    "DenoisingAutoencoder",
    "Jigsaw",
    "MemoryBank",
    "MethodConfig",
    "MethodSpec",
    "MoCo",
    "MoCoV3",
    "RotNet",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "Supervised",
    "SwAV",
    "TiCo",
    "Trainer",
    "TrainingDefaults",
    "VICReg",
    "WarmupCosineSchedule",
    "build_method",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "clusterfit_labels",
    "embed_dataset",
    "load_checkpoint",
    "load_dataset",
    "method_config",
    "read_checkpoint",
    "training_settings",
]
