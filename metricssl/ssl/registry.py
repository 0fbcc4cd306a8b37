"""The methods the Trainer knows by name, their defaults, and how to build one from a config.

:data:`METHODS` maps a name to a :class:`MethodSpec`: the method class, its typed config
(the one source of its hyper-parameters' defaults), its augmentation recipe, its heads and
the training defaults that suit small images (8x8 to 32x32) on a CPU with the default
``small_cnn`` backbone. :func:`build_method` turns a plain-dict config (what a checkpoint
stores) into a ready :class:`~metricssl.ssl.method.SSLMethod`; :func:`cli_choices` gives
the command line its name lists.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from torch import nn

from ..augment.compose import Compose
from ..augment.normalize import Normalize
from ..augment.recipes import (
    barlow_twins_views,
    byol_views,
    moco_v2_views,
    simclr_views,
    simsiam_views,
    vicreg_views,
)
from ..models.embedder import infer_num_features
from ..models.heads import PredictionHead, ProjectionHead
from ..models.resnet import resnet18, resnet50
from ..models.small_cnn import SmallCNN
from ..models.vit import default_patch_size, vit_small, vit_tiny
from ..models.zoo import SPEC_FORMS, build_from_spec, is_backbone_spec, parse_backbone_spec
from .amp import AMP_MODES
from .barlow_twins import BarlowTwins, BarlowTwinsConfig
from .byol import BYOL, BYOLConfig
from .dcl import DCL, DCLConfig
from .deepcluster import DeepCluster, DeepClusterConfig, deepcluster_heads, deepcluster_views
from .denoising_autoencoder import DenoisingAutoencoder, DenoisingAutoencoderConfig
from .dino import DINO, DINOConfig, dino_heads, dino_views
from .inpainting import ContextEncoder, ContextEncoderConfig
from .jigsaw import Jigsaw, JigsawConfig, jigsaw_heads, jigsaw_views
from .mae import MAE, MAEConfig, mae_heads, mae_views
from .method import CheckedConfig, MethodConfig, SSLMethod, param
from .mmcr import MMCR, MMCRConfig, mmcr_views
from .moco import MoCo, MoCoConfig
from .moco_v3 import MoCoV3, MoCoV3Config
from .nnclr import NNCLR, NNCLRConfig
from .npid import NPID, NPIDConfig, npid_heads, npid_views
from .pirl import PIRL, PIRLConfig, pirl_heads, pirl_views
from .reconstruction import reconstruction_heads, reconstruction_views
from .rotnet import RotNet, RotNetConfig, rotnet_heads, rotnet_views
from .simclr import SimCLR, SimCLRConfig
from .simsiam import SimSiam, SimSiamConfig
from .supervised import Supervised, SupervisedConfig, supervised_heads
from .swav import SwAV, SwAVConfig, swav_heads, swav_views
from .tico import TiCo, TiCoConfig
from .vae import VAE, VAEConfig
from .vicreg import VICReg, VICRegConfig


def _supervised_views(image_size, *, mean=None, std=None, **options):
    # Only flips: with labels, crops and jitter cost more than they add. On the Fashion-MNIST
    # validation split (6 epochs) dropping them raised MAP@R from 0.585 to 0.682.
    settings = dict(
        n_views=1,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=0.0,
    )
    return simclr_views(image_size, mean=mean, std=std, **{**settings, **options})


def _projection(**fixed) -> Callable:
    def build(f: int, hp: dict) -> dict[str, nn.Module]:
        head = ProjectionHead(f, hp["proj_hidden_dim"], hp["proj_output_dim"], **fixed)
        return {"projection_head": head}

    return build


def _projection_and_predictor(num_layers: int, last_bn: bool) -> Callable:
    def build(f: int, hp: dict) -> dict[str, nn.Module]:
        out = hp["proj_output_dim"]
        return {
            "projection_head": ProjectionHead(
                f, hp["proj_hidden_dim"], out, num_layers=num_layers, last_bn=last_bn
            ),
            "prediction_head": PredictionHead(out, hp["pred_hidden_dim"], out),
        }

    return build


OPTIMIZERS = ("sgd", "adam", "adamw", "lars")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
BACKBONES = ("small_cnn", "resnet18", "resnet50", "vit_tiny", "vit_small")


@dataclass(frozen=True)
class TrainingDefaults(CheckedConfig):
    """What the Trainer uses for the arguments left out: the optimiser (``sgd`` with momentum
    0.9, ``adam``, ``adamw`` or ``lars``), its learning rate and weight decay, the batch size
    per process and the warmup in epochs.

    The defaults suit small images (8x8 to 32x32) on a CPU with ``small_cnn``; every method
    shares them but supervised learning.

    Example:
        >>> TrainingDefaults().lr, METHODS["supervised"].training.lr
        (0.002, 0.001)
    """

    optimizer: str = param("adamw", choices=OPTIMIZERS)
    lr: float = param(2e-3, low=0, low_inclusive=False)
    weight_decay: float = param(1e-5, low=0)
    batch_size: int = param(256, low=1, integer=True)
    warmup_epochs: float = param(1.0, low=0)


# A ready-made method the registry does not know: no warmup and no weight decay.
CUSTOM_TRAINING = TrainingDefaults(lr=1e-3, weight_decay=0.0, warmup_epochs=0.0)


@dataclass(frozen=True)
class MethodSpec:
    """A method's class, hyper-parameters, recipe, heads and training defaults.

    Attributes:
        cls: the :class:`SSLMethod` subclass.
        config: its :class:`~metricssl.ssl.method.MethodConfig` (hyper-parameters with their
            defaults: head widths and the constructor's arguments); the class's constructor
            defaults are the same fields'.
        views: recipe factory ``views(image_size, mean=, std=) -> MultiView``.
        heads: ``heads(feature_dim, hparams) -> {constructor argument: module}``.
        training: :class:`TrainingDefaults`.
        backbone: the backbone a run builds when none is named (``small_cnn``; ``vit_tiny``
            for MAE, which needs a Vision Transformer).
        predated: hyper-parameters added after the method's first release, with the value
            a checkpoint written before then was trained with (its stored ``hparams`` lack
            them, and today's default may build a different model).
    """

    cls: type[SSLMethod]
    config: type[MethodConfig]
    views: Callable
    heads: Callable
    training: TrainingDefaults = TrainingDefaults()
    predated: Mapping = field(default_factory=dict)
    backbone: str = "small_cnn"

    @property
    def hparams(self) -> dict:
        """The default hyper-parameters as a plain dict."""
        return self.config().as_dict()


# Head widths are scaled down from the papers' (2048-8192) for a 128-feature backbone on a CPU;
# pass larger ones through hparams for a ResNet.
METHODS: dict[str, MethodSpec] = {
    "simclr": MethodSpec(SimCLR, SimCLRConfig, simclr_views, _projection()),
    # DCL is SimCLR with the decoupled loss (DCLW: hparams weighted=True).
    "dcl": MethodSpec(DCL, DCLConfig, simclr_views, _projection()),
    "moco": MethodSpec(MoCo, MoCoConfig, moco_v2_views, _projection(batch_norm=False)),
    "byol": MethodSpec(
        BYOL, BYOLConfig, byol_views, _projection_and_predictor(num_layers=2, last_bn=False)
    ),
    # AdamW (the default), not the paper's SGD at 0.05: on the validation split it reached a
    # kNN score of 0.795 after 3 epochs against SGD's 0.756 (0.785 at lr 0.5).
    "simsiam": MethodSpec(
        SimSiam, SimSiamConfig, simsiam_views, _projection_and_predictor(3, last_bn=True)
    ),
    # MoCo v3 and NNCLR: the papers' 3-layer projector (last BatchNorm) and 2-layer predictor
    # (scaled down), and BYOL's asymmetric augmentations, which both papers train with.
    "moco_v3": MethodSpec(
        MoCoV3, MoCoV3Config, byol_views, _projection_and_predictor(3, last_bn=True)
    ),
    "nnclr": MethodSpec(NNCLR, NNCLRConfig, byol_views, _projection_and_predictor(3, last_bn=True)),
    "barlow_twins": MethodSpec(
        BarlowTwins, BarlowTwinsConfig, barlow_twins_views, _projection(num_layers=3)
    ),
    "vicreg": MethodSpec(VICReg, VICRegConfig, vicreg_views, _projection(num_layers=3)),
    # TiCo builds on BYOL: its views and a momentum target, without the predictor.
    "tico": MethodSpec(TiCo, TiCoConfig, byol_views, _projection()),
    # 4 views per image, not the authors' 40: every view is a pass through the backbone.
    "mmcr": MethodSpec(MMCR, MMCRConfig, mmcr_views, _projection()),
    "swav": MethodSpec(SwAV, SwAVConfig, swav_views, swav_heads),
    "dino": MethodSpec(DINO, DINOConfig, dino_views, dino_heads),
    "npid": MethodSpec(NPID, NPIDConfig, npid_views, npid_heads, predated={"bank_init": "random"}),
    "pirl": MethodSpec(
        PIRL,
        PIRLConfig,
        pirl_views,
        pirl_heads,
        predated={"proj_hidden_dim": 0, "bank_init": "random"},
    ),
    "deepcluster": MethodSpec(
        DeepCluster,
        DeepClusterConfig,
        deepcluster_views,
        deepcluster_heads,
        # A constructor argument the registry's hyper-parameters did not list before.
        predated={"cluster_batch_size": 512},
    ),
    "rotnet": MethodSpec(RotNet, RotNetConfig, rotnet_views, rotnet_heads),
    "jigsaw": MethodSpec(Jigsaw, JigsawConfig, jigsaw_views, jigsaw_heads),
    "context_encoder": MethodSpec(
        ContextEncoder, ContextEncoderConfig, reconstruction_views, reconstruction_heads
    ),
    "denoising_autoencoder": MethodSpec(
        DenoisingAutoencoder,
        DenoisingAutoencoderConfig,
        reconstruction_views,
        reconstruction_heads,
    ),
    "vae": MethodSpec(VAE, VAEConfig, reconstruction_views, reconstruction_heads),
    # The paper's recipe (AdamW, base lr 1.5e-4 per 256 images, weight decay 0.05) with a
    # warmup of 1 of the default 10 epochs (the paper's 40 of 800). On sklearn digits (8
    # epochs, 2 px patches) lr 1.5e-3 was no better by kNN (0.399 vs 0.406) and left the class
    # token's features narrower (effective rank 2.4 vs 7.2).
    "mae": MethodSpec(
        MAE,
        MAEConfig,
        mae_views,
        mae_heads,
        TrainingDefaults(lr=1.5e-4, weight_decay=0.05, warmup_epochs=1.0),
        backbone="vit_tiny",
    ),
    "supervised": MethodSpec(
        Supervised,
        SupervisedConfig,
        _supervised_views,
        supervised_heads,
        TrainingDefaults(lr=1e-3, weight_decay=1e-4, warmup_epochs=0.5),
    ),
}

# Short names the field also uses; a run stores the full name.
ALIASES = {"inpainting": "context_encoder", "dae": "denoising_autoencoder"}


def canonical_method_name(name) -> str:
    """``name`` with :data:`ALIASES` resolved; an unknown name is a ``ValueError``."""
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(
            f"unknown method {name!r}; choose one of {sorted(METHODS)} "
            f"(aliases: {', '.join(f'{a}={n}' for a, n in ALIASES.items())})"
        )
    return name


def check_method_name(name) -> MethodSpec:
    return METHODS[canonical_method_name(name)]


def build_backbone(name: str, input_shape: Sequence[int], **kwargs) -> nn.Module:
    """A backbone by name for images of ``input_shape = (C, H, W)``.

    ``small_cnn``: :class:`~metricssl.models.SmallCNN` with 128 channels, pooled to a 2x2 grid
    (512 features) from 16 px up and globally (128 features) below. ``resnet18`` /
    ``resnet50``: the CIFAR stem below 64 px, the ImageNet stem from 64 px up. ``vit_tiny`` /
    ``vit_small``: :class:`~metricssl.models.vit.VisionTransformer` built for ``(H, W)``, with
    4 px patches up to 64 px and 16 px patches above (``patch_size`` overrides it).

    A spec with ``:`` (``timm:NAME``, ``torchvision:NAME``, ``package.module:attr``) is built
    by :func:`~metricssl.models.zoo.build_from_spec` with ``kwargs``.
    """
    if is_backbone_spec(name):
        return build_from_spec(name, tuple(int(s) for s in input_shape), **kwargs)
    channels, height, width = (int(s) for s in input_shape)
    if name == "small_cnn":
        # Keeping the 2x2 layout raised SimCLR's held-out kNN accuracy on Fashion-MNIST by
        # 0.02-0.03 at every epoch (validation split; BENCHMARKS.md); an 8x8 image's last map
        # is 1x1, so there is no layout to keep.
        kwargs.setdefault("pool_size", 2 if min(height, width) >= 16 else 1)
        return SmallCNN(in_channels=channels, **kwargs)
    if name in ("resnet18", "resnet50"):
        stem = kwargs.pop("stem", "cifar" if min(height, width) < 64 else "imagenet")
        factory = resnet18 if name == "resnet18" else resnet50
        return factory(stem=stem, in_channels=channels, **kwargs)
    if name in ("vit_tiny", "vit_small"):
        kwargs.setdefault("image_size", (height, width))
        kwargs.setdefault("patch_size", default_patch_size(kwargs["image_size"]))
        factory = vit_tiny if name == "vit_tiny" else vit_small
        return factory(in_channels=channels, **kwargs)
    check_backbone(name)
    raise AssertionError(f"backbone {name!r} passed check_backbone but has no builder")


def check_backbone(backbone) -> None:
    """Refuse what cannot be a backbone before any work: a string that is neither a name of
    :data:`BACKBONES` nor a well-formed spec (:func:`~metricssl.models.zoo.parse_backbone_spec`;
    whether its package, module and model exist is found when it is built), or anything but
    a string or an ``nn.Module``.

    Example:
        >>> check_backbone("timm:resnet18")  # the form only: timm is imported to build it
        >>> check_backbone("resnet19")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown backbone 'resnet19'; ...
    """
    if isinstance(backbone, nn.Module):
        return
    if not isinstance(backbone, str):
        raise TypeError(
            f"backbone must be a name, a spec or an nn.Module, got {type(backbone).__name__}"
        )
    if is_backbone_spec(backbone):
        parse_backbone_spec(backbone)
    elif backbone not in BACKBONES:
        raise ValueError(
            f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}, a spec "
            f"({', '.join(SPEC_FORMS)}) or pass a module"
        )


def clean_transform(mean: Sequence[float] | None, std: Sequence[float] | None) -> Compose:
    """The un-augmented conversion: uint8 -> float in [0, 1] -> (optional) normalisation."""
    return Compose([Normalize(mean, std)] if mean is not None else [])


def stored_hparams(name: str, hparams: Mapping | None) -> dict:
    """The ``hparams`` a checkpoint stored, completed with the values of the ones it
    predates (:attr:`MethodSpec.predated`), for rebuilding the model it was trained with."""
    return {**METHODS[canonical_method_name(name)].predated, **dict(hparams or {})}


def method_config(name: str, hparams: Mapping | None = None) -> MethodConfig:
    """The method's :class:`~metricssl.ssl.method.MethodConfig` with ``hparams`` applied
    (an unknown key or a bad value is refused with its name).

    Example:
        >>> method_config("dino", {"momentum": 0.99}).momentum
        0.99
    """
    name = canonical_method_name(name)
    config = METHODS[name].config
    known = {f.name for f in fields(config)}
    unknown = sorted(set(hparams or {}) - known)
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter {unknown[0]!r} for method {name!r}; known: {sorted(known)}"
        )
    return config(**dict(hparams or {}))


def method_hparams(name: str, hparams: Mapping | None = None) -> dict:
    """The method's default hyper-parameters updated with ``hparams``, as a plain dict."""
    return method_config(name, hparams).as_dict()


def cli_choices() -> dict[str, tuple]:
    """The names the command line offers, by argument: ``method`` (aliases included),
    ``backbone``, ``optimizer``, ``amp`` and ``memory_format``.

    Example:
        >>> "inpainting" in cli_choices()["method"]
        True
    """
    return {
        "method": (*METHODS, *ALIASES),
        "backbone": BACKBONES,
        "optimizer": OPTIMIZERS,
        "amp": AMP_MODES,
        "memory_format": MEMORY_FORMATS,
    }


def build_method(
    method: str,
    input_shape: Sequence[int],
    backbone: str | nn.Module | None = None,
    backbone_kwargs: Mapping | None = None,
    hparams: Mapping | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    view_kwargs: Mapping | None = None,
    num_samples: int | None = None,
) -> SSLMethod:
    """Build a method by name with its heads, recipe and clean transform.

    Args:
        method: a key of :data:`METHODS`.
        input_shape: (C, H, W) of the training images.
        backbone: a name from :data:`BACKBONES` or any module (images -> features); None:
            the method's (:attr:`MethodSpec.backbone`).
        backbone_kwargs: arguments of the named backbone (e.g. ``{"embedding_dim": 256}``), or
            of a spec's builder: a spec (``timm:NAME``, ``torchvision:NAME``,
            ``package.module:attr``; :mod:`metricssl.models.zoo`) is a backbone name too.
        hparams: method hyper-parameters overriding the defaults of the method's config
            (see :func:`method_config`).
        mean, std: per-channel normalisation applied after augmentation (and in ``embed``).
        num_classes: classes of the labelled data (losses with proxies need it).
        view_kwargs: keyword arguments of the method's recipe (e.g. ``{"flip_p": 0.0}`` for
            :func:`~metricssl.augment.simclr_views`), overriding its defaults.
        num_samples: images in the training split, for methods with a per-sample memory
            bank (their constructor takes ``num_samples``).

    Example:
        >>> from metricssl.ssl.registry import build_method
        >>> method = build_method("simclr", (1, 28, 28), hparams={"temperature": 0.1})
        >>> method.temperature
        0.1
    """
    method = canonical_method_name(method)
    spec = METHODS[method]
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
    config = method_config(method, hparams)
    if backbone is None:
        backbone = spec.backbone
    if isinstance(backbone, str):
        net = build_backbone(backbone, input_shape, **dict(backbone_kwargs or {}))
    elif isinstance(backbone, nn.Module):
        net = backbone
    else:
        raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
    feature_dim = infer_num_features(net, input_shape)
    heads = spec.heads(feature_dim, config.as_dict())
    args = config.method_kwargs(spec.cls, feature_dim=feature_dim, num_classes=num_classes)
    views = spec.views(input_shape[1:], mean=mean, std=std, **dict(view_kwargs or {}))
    if "num_samples" in inspect.signature(spec.cls.__init__).parameters:
        if num_samples is None:
            raise ValueError(f"method {method!r} needs num_samples (images in the training set)")
        args["num_samples"] = num_samples
    return spec.cls(
        net,
        **heads,
        **args,
        feature_dim=feature_dim,
        views=views,
        preprocess=clean_transform(mean, std),
        input_shape=input_shape,
    )
