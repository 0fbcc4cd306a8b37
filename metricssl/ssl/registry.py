"""The methods the Trainer knows by name, their defaults, and how to build one from a config.

:data:`METHODS` maps a name to a :class:`MethodSpec`: the method class, its augmentation
recipe, its heads and the training defaults that suit small images (8x8 to 32x32) on a CPU
with the default ``small_cnn`` backbone. :func:`build_method` turns a plain-dict config
(what a checkpoint stores) into a ready :class:`~metricssl.ssl.method.SSLMethod`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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
from ..core.validation import check_number
from ..models.embedder import infer_num_features
from ..models.heads import PredictionHead, ProjectionHead
from ..models.resnet import resnet18, resnet50
from ..models.small_cnn import SmallCNN
from .barlow_twins import BarlowTwins
from .byol import BYOL
from .deepcluster import DeepCluster, deepcluster_heads, deepcluster_views
from .denoising_autoencoder import DenoisingAutoencoder
from .dino import DINO, dino_heads, dino_views
from .inpainting import ContextEncoder
from .jigsaw import Jigsaw, jigsaw_heads, jigsaw_views
from .method import SSLMethod
from .moco import MoCo
from .npid import NPID, npid_heads, npid_views
from .pirl import PIRL, pirl_heads, pirl_views
from .reconstruction import reconstruction_heads, reconstruction_views
from .rotnet import RotNet, rotnet_heads, rotnet_views
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .swav import SwAV, swav_heads, swav_views
from .vae import VAE
from .vicreg import VICReg


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


def _projection(hidden: str, output: str, **fixed) -> Callable:
    def build(f: int, hp: dict) -> dict[str, nn.Module]:
        return {"projection_head": ProjectionHead(f, hp[hidden], hp[output], **fixed)}

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


def _embedding_head(f: int, hp: dict) -> dict[str, nn.Module]:
    # A linear embedder on the pooled (non-negative, post-ReLU) features, as in PML's
    # trunk + embedder recipe: it lets the loss use the whole sphere, not one orthant.
    dim = hp.get("embedding_dim")
    check_number("embedding_dim", dim, low=1, integer=True, allow_none=True)
    return {} if dim is None else {"embedding_head": nn.Linear(f, int(dim))}


@dataclass(frozen=True)
class MethodSpec:
    """A method's class, recipe, heads and defaults.

    Attributes:
        cls: the :class:`SSLMethod` subclass.
        views: recipe factory ``views(image_size, mean=, std=) -> MultiView``.
        heads: ``heads(feature_dim, hparams) -> {constructor argument: module}``.
        hparams: default method hyper-parameters: head widths (``proj_*``, ``pred_*``) and
            the method's own constructor arguments (temperature, queue size, ...).
        optimizer, lr, weight_decay, batch_size, warmup_epochs: training defaults.
        predated: hyper-parameters added after the method's first release, with the value
            a checkpoint written before then was trained with (its stored ``hparams`` lack
            them, and today's default may build a different model).
    """

    cls: type[SSLMethod]
    views: Callable
    heads: Callable
    hparams: Mapping = field(default_factory=dict)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    warmup_epochs: float = 1.0
    predated: Mapping = field(default_factory=dict)


# Head widths are scaled down from the papers' (2048-8192) for a 128-feature backbone on a CPU;
# pass larger ones through hparams for a ResNet.
METHODS: dict[str, MethodSpec] = {
    "simclr": MethodSpec(
        SimCLR,
        simclr_views,
        _projection("proj_hidden_dim", "proj_output_dim"),
        {"proj_hidden_dim": 512, "proj_output_dim": 128, "temperature": 0.2},
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "moco": MethodSpec(
        MoCo,
        moco_v2_views,
        _projection("proj_hidden_dim", "proj_output_dim", batch_norm=False),
        {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "temperature": 0.2,
            "queue_size": 4096,
            "momentum": 0.99,
            "symmetric": False,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "byol": MethodSpec(
        BYOL,
        byol_views,
        _projection_and_predictor(num_layers=2, last_bn=False),
        {
            "proj_hidden_dim": 1024,
            "proj_output_dim": 128,
            "pred_hidden_dim": 1024,
            "momentum": 0.99,
            "final_momentum": 1.0,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "simsiam": MethodSpec(
        SimSiam,
        simsiam_views,
        _projection_and_predictor(num_layers=3, last_bn=True),
        {"proj_hidden_dim": 512, "proj_output_dim": 512, "pred_hidden_dim": 128},
        # AdamW, not the paper's SGD at 0.05: on the validation split it reached a kNN score
        # of 0.795 after 3 epochs against SGD's 0.756 (0.785 at lr 0.5).
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "barlow_twins": MethodSpec(
        BarlowTwins,
        barlow_twins_views,
        _projection("proj_hidden_dim", "proj_output_dim", num_layers=3),
        {
            "proj_hidden_dim": 1024,
            "proj_output_dim": 1024,
            "lambda_param": 5e-3,
            "scale_loss": 1.0,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "vicreg": MethodSpec(
        VICReg,
        vicreg_views,
        _projection("proj_hidden_dim", "proj_output_dim", num_layers=3),
        {
            "proj_hidden_dim": 1024,
            "proj_output_dim": 1024,
            "invariance_lambda": 25.0,
            "variance_mu": 25.0,
            "covariance_v": 1.0,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "swav": MethodSpec(
        SwAV,
        swav_views,
        swav_heads,
        {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "num_prototypes": 100,
            "temperature": 0.1,
            "sinkhorn_epsilon": 0.05,
            "sinkhorn_iterations": 3,
            "freeze_prototypes_iters": 200,
            "queue_length": 0,
            "queue_start_step": 0,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "dino": MethodSpec(
        DINO,
        dino_views,
        dino_heads,
        {
            "proj_hidden_dim": 512,
            "proj_bottleneck_dim": 128,
            "output_dim": 2048,
            "proj_batch_norm": True,
            "norm_last_layer": True,
            "warmup_teacher_temp": 0.04,
            "teacher_temp": 0.04,
            "warmup_teacher_temp_steps": 0,
            "student_temp": 0.1,
            "center_momentum": 0.9,
            # 0.996 suits the paper's hundreds of epochs; a short CPU run needs a teacher
            # that keeps up (as BYOL's 0.99 here).
            "momentum": 0.99,
            "final_momentum": 1.0,
            # About one Fashion-MNIST epoch at batch 256, the paper's frozen first epoch.
            "freeze_last_layer_iters": 200,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "npid": MethodSpec(
        NPID,
        npid_views,
        npid_heads,
        {
            "embedding_dim": 128,
            "num_negatives": 4096,
            "temperature": 0.07,
            "memory_momentum": 0.5,
            "loss": "softmax",
            "bank_init": "features",
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
        predated={"bank_init": "random"},
    ),
    "pirl": MethodSpec(
        PIRL,
        pirl_views,
        pirl_heads,
        {
            "embedding_dim": 128,
            "grid": 3,
            "tile_dim": 128,
            # An MLP head and a bank that starts from the network's own features: each
            # raised the held-out kNN after 8 epochs (0.770 -> 0.793, then 0.804 by epoch 2).
            "proj_hidden_dim": 512,
            "tile_jitter": None,
            "num_negatives": 4096,
            "temperature": 0.07,
            "memory_momentum": 0.5,
            "loss_weight": 0.5,
            "bank_init": "features",
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
        predated={"proj_hidden_dim": 0, "bank_init": "random"},
    ),
    "deepcluster": MethodSpec(
        DeepCluster,
        deepcluster_views,
        deepcluster_heads,
        {
            "proj_hidden_dim": 512,
            "proj_output_dim": 128,
            "num_clusters": 100,
            "temperature": 0.1,
            "recluster_every": 1,
            "kmeans_iterations": 10,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "rotnet": MethodSpec(
        RotNet,
        rotnet_views,
        rotnet_heads,
        {"head_hidden_dim": 512, "head_num_layers": 2, "all_rotations": True},
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "jigsaw": MethodSpec(
        Jigsaw,
        jigsaw_views,
        jigsaw_heads,
        {
            "grid": 3,
            "num_permutations": 100,
            "permutation_seed": 0,
            "tile_jitter": None,
            "normalize_tiles": False,
            "tile_dim": 128,
            "head_hidden_dim": 512,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "context_encoder": MethodSpec(
        ContextEncoder,
        reconstruction_views,
        reconstruction_heads,
        {"mask_fraction": 0.25, "context_weight": 0.0, "fill_value": 0.0, "decoder_width": 16},
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "denoising_autoencoder": MethodSpec(
        DenoisingAutoencoder,
        reconstruction_views,
        reconstruction_heads,
        {"masking_fraction": 0.25, "noise_std": 0.0, "mask_value": 0.0, "decoder_width": 16},
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "vae": MethodSpec(
        VAE,
        reconstruction_views,
        reconstruction_heads,
        {
            "latent_dim": 32,
            "beta": 1.0,
            "capacity": 0.0,
            "capacity_warmup": 1.0,
            "decoder_width": 16,
        },
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-5,
    ),
    "supervised": MethodSpec(
        Supervised,
        _supervised_views,
        _embedding_head,
        {
            "embedding_dim": 128,
            "loss": "MultiSimilarityLoss",
            "miner": "MultiSimilarityMiner",
            "samples_per_class": "auto",
        },
        optimizer="adamw",
        lr=1e-3,
        weight_decay=1e-4,
        warmup_epochs=0.5,
    ),
}

BACKBONES = ("small_cnn", "resnet18", "resnet50")


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
    ``resnet50``: the CIFAR stem below 64 px, the ImageNet stem from 64 px up.
    """
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
    raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)} or pass a module")


def clean_transform(mean: Sequence[float] | None, std: Sequence[float] | None) -> Compose:
    """The un-augmented conversion: uint8 -> float in [0, 1] -> (optional) normalisation."""
    return Compose([Normalize(mean, std)] if mean is not None else [])


def stored_hparams(name: str, hparams: Mapping | None) -> dict:
    """The ``hparams`` a checkpoint stored, completed with the values of the ones it
    predates (:attr:`MethodSpec.predated`), for rebuilding the model it was trained with."""
    return {**METHODS[canonical_method_name(name)].predated, **dict(hparams or {})}


def method_hparams(name: str, hparams: Mapping | None = None) -> dict:
    """The method's default hyper-parameters updated with ``hparams`` (unknown keys refused)."""
    name = canonical_method_name(name)
    spec = METHODS[name]
    merged = dict(spec.hparams)
    allowed = set(merged) | _constructor_args(spec.cls)
    for key, value in (hparams or {}).items():
        if key not in allowed:
            raise ValueError(
                f"unknown hyper-parameter {key!r} for method {name!r}; known: {sorted(allowed)}"
            )
        merged[key] = value
    return merged


def _constructor_args(cls: type) -> set[str]:
    skip = {"self", "backbone", "feature_dim", "views", "preprocess", "input_shape", "num_samples"}
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in skip and not p.endswith("_head")}


def build_method(
    method: str,
    input_shape: Sequence[int],
    backbone: str | nn.Module = "small_cnn",
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
        backbone: a name from :data:`BACKBONES` or any module (images -> features).
        backbone_kwargs: arguments of the named backbone (e.g. ``{"embedding_dim": 256}``).
        hparams: method hyper-parameters overriding the spec's defaults.
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
    hp = method_hparams(method, hparams)
    if isinstance(backbone, str):
        net = build_backbone(backbone, input_shape, **dict(backbone_kwargs or {}))
    elif isinstance(backbone, nn.Module):
        net = backbone
    else:
        raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
    feature_dim = infer_num_features(net, input_shape)
    heads = spec.heads(feature_dim, hp)
    args = {k: v for k, v in hp.items() if k in _constructor_args(spec.cls)}
    if spec.cls is Supervised and isinstance(args.get("loss"), str):
        from .supervised import make_loss

        embedding_size = hp.get("embedding_dim") or feature_dim
        args["loss"] = make_loss(
            args["loss"], num_classes=num_classes, embedding_size=embedding_size
        )
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
