"""Backbones (small CNN, ResNet-18/50, ViT-Tiny/Small) and heads, plain torch; any other
backbone from a spec (``timm:NAME``, ``torchvision:NAME``, ``package.module:attr``) with
:func:`build_from_spec`.

The backbone contract: any ``nn.Module`` mapping float images ``(N, C, H, W)`` to features
``(N, F)``; ``F`` comes from its ``num_features`` attribute or from
:func:`infer_num_features`.
"""

from .batchnorm import frozen_running_stats
from .embedder import Embedder, infer_num_features
from .heads import PredictionHead, ProjectionHead, PrototypesHead
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from .small_cnn import SmallCNN
from .vit import (
    TransformerBlock,
    VisionTransformer,
    patchify,
    sincos_position_embedding,
    unpatchify,
    vit_small,
    vit_tiny,
)
from .zoo import BackboneImportError, build_from_spec

__all__ = [
    "BackboneImportError",
    "BasicBlock",
    "Bottleneck",
    "Embedder",
    "PredictionHead",
    "ProjectionHead",
    "PrototypesHead",
    "ResNet",
    "SmallCNN",
    "TransformerBlock",
    "VisionTransformer",
    "build_from_spec",
    "frozen_running_stats",
    "infer_num_features",
    "patchify",
    "resnet18",
    "resnet50",
    "sincos_position_embedding",
    "unpatchify",
    "vit_small",
    "vit_tiny",
]
