"""DINO: a student predicts a momentum teacher's centred, sharpened output, across multi-crops."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.checks import check_size
from ..augment.multi_crop import MultiCrop, multi_crop
from ..augment.recipes import Range, Size
from ..core.validation import check_bool, check_module, check_number
from ..losses.dino_loss import DINOLoss
from .method import (
    Batch,
    MethodConfig,
    MomentumConfigMixin,
    MomentumTargets,
    SSLMethod,
    check_multi_crop_views,
    features_by_size,
    param,
)


def dino_views(
    image_size: Size,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    n_local: int = 6,
    global_size: Size | None = None,
    local_size: Size | None = None,
    global_scale: Range = (0.4, 1.0),
    local_scale: Range | None = None,
    **options,
) -> MultiCrop:
    """DINO's multi-crop recipe, sized for small images: 2 global crops + ``n_local`` local.

    The paper (Caron et al., ICCV 2021) takes 2 x 224 px crops of scale (0.4, 1) and
    several 96 px crops of scale (0.05, 0.4) from ImageNet images, with flip, colour jitter
    (0.4, 0.4, 0.2, 0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur (global crop 1
    always, global crop 2 with p = 0.1, local crops with p = 0.5) and solarisation of global
    crop 2 with p = 0.2: the defaults of :func:`~metricssl.augment.multi_crop`. Here:

    - global crops have the image's size (28 px for Fashion-MNIST, 8 px for sklearn digits)
      and local crops 3/7 of it, the paper's 96 / 224 (12 px at 28 px), but at least 4 px
      (4 px at 8 px); the small CNN backbones pool adaptively, so any size goes through them;
    - below 32 px the local scale is (0.1, 0.4): on a 28 px image a 5% crop is a 6 px
      patch, often plain background, that says nothing about the global view;
    - ``n_local = 6``, the paper's ablation setting (2 x 224 + 6 x 96): a 12 px crop costs
      about a fifth of a 28 px one, so the student's step costs about 3 global crops.

    Args:
        image_size: size of the input images, int or (height, width).
        mean, std: optional per-channel normalisation, both or neither.
        n_local: local crops per image (>= 0).
        global_size, local_size: crop output sizes; default the image size and 3/7 of it.
            Neither may be larger than the image.
        global_scale, local_scale: crop area ranges; ``local_scale=None`` picks (0.05, 0.4)
            from 32 px up and (0.1, 0.4) below.
        **options: any other argument of :func:`~metricssl.augment.multi_crop` (``flip_p``,
            ``jitter_p``, ``global_blur_p``, ...).

    Example:
        >>> import torch
        >>> from metricssl.ssl.dino import dino_views
        >>> images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
        >>> [v.shape[-1] for v in dino_views(28, n_local=2)(images)]
        [28, 28, 12, 12]
        >>> [v.shape[-1] for v in dino_views(8, n_local=2)(torch.rand(4, 1, 8, 8))]
        [8, 8, 4, 4]
    """
    size = check_size("image_size", image_size)
    global_size = size if global_size is None else check_size("global_size", global_size)
    if local_size is None:
        local_size = tuple(max(min(4, s), round(3 * s / 7)) for s in global_size)
    if local_scale is None:
        local_scale = (0.1, 0.4) if min(size) < 32 else (0.05, 0.4)
    return multi_crop(
        global_size,
        local_size,
        n_local,
        image_size=size,
        global_scale=global_scale,
        local_scale=local_scale,
        mean=mean,
        std=std,
        **options,
    )


class DINOHead(nn.Module):
    """DINO's projection head: MLP -> bottleneck -> L2 normalisation -> weight-normalised linear.

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
    section 3.1: a 3-layer MLP (hidden width 2048, GELU, no BatchNorm for ViTs) to a
    256-dimensional bottleneck, L2 normalisation, then a weight-normalised linear layer
    (Salimans and Kingma, NeurIPS 2016) to ``K = 65536`` dimensions, without bias. Each row
    of the last layer is ``g_k * v_k / ||v_k||``; with ``norm_last_layer=True`` (the paper's
    default) ``g_k = 1`` is fixed, so the outputs are cosines in [-1, 1].

    ``forward(features, last_layer_grad=None)``: ``last_layer_grad`` (a 0-d tensor, 0 or 1)
    multiplies the gradient that reaches the last layer's weights without changing the
    output; 0 freezes the last layer (DINO does so for its first epoch), while the rest of
    the head and the backbone still receive their gradient.

    Args:
        input_dim: features in (the backbone's width).
        hidden_dim: width of the MLP's hidden layers (2048 in the paper).
        bottleneck_dim: width of the normalised bottleneck (256).
        output_dim: ``K``, the width of the output (65536).
        num_layers: linear layers of the MLP, the last one to the bottleneck (3).
        batch_norm: BatchNorm1d after each hidden linear layer (False for ViTs in the paper).
        norm_last_layer: fix the weight norm's scale ``g`` to 1 (True) or learn it (False).

    Example:
        >>> import torch
        >>> from metricssl.ssl.dino import DINOHead
        >>> head = DINOHead(128, hidden_dim=256, bottleneck_dim=64, output_dim=1000)
        >>> out = head(torch.randn(4, 128))
        >>> out.shape, bool(out.abs().max() <= 1 + 1e-6)
        (torch.Size([4, 1000]), True)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        for name, value in (
            ("input_dim", input_dim),
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
            ("output_dim", output_dim),
            ("num_layers", num_layers),
        ):
            check_number(name, value, low=1, integer=True)
        check_bool("batch_norm", batch_norm)
        check_bool("norm_last_layer", norm_last_layer)
        self.input_dim, self.hidden_dim = int(input_dim), int(hidden_dim)
        self.bottleneck_dim, self.output_dim = int(bottleneck_dim), int(output_dim)
        self.num_layers, self.norm_last_layer = int(num_layers), norm_last_layer
        layers: list[nn.Module] = []
        width = self.input_dim
        for _ in range(self.num_layers - 1):
            layers.append(nn.Linear(width, self.hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(self.hidden_dim))
            layers.append(nn.GELU())
            width = self.hidden_dim
        layers.append(nn.Linear(width, self.bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                # The ViT initialisation the paper's heads use.
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        weight = torch.empty(self.output_dim, self.bottleneck_dim)
        nn.init.kaiming_uniform_(weight, a=5**0.5)  # nn.Linear's; only directions matter
        self.last_weight = nn.Parameter(weight)
        if norm_last_layer:
            self.register_parameter("last_scale", None)
        else:
            self.last_scale = nn.Parameter(torch.ones(self.output_dim, 1))

    def forward(
        self, features: torch.Tensor, last_layer_grad: torch.Tensor | None = None
    ) -> torch.Tensor:
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(
                f"DINOHead expects features of shape (N, {self.input_dim}), got "
                f"{tuple(features.shape)}"
            )
        z = F.normalize(self.mlp(features), dim=1)
        v, g = self.last_weight, self.last_scale
        if last_layer_grad is not None:
            # Same value; the gradient is scaled on the device, without a host sync.
            v = v.detach() + last_layer_grad * (v - v.detach())
            if g is not None:
                g = g.detach() + last_layer_grad * (g - g.detach())
        w = F.normalize(v, dim=1)
        if g is not None:
            w = g * w
        return F.linear(z, w.to(z.dtype))

    def extra_repr(self) -> str:
        return (
            f"last_layer: {self.bottleneck_dim} -> {self.output_dim}, weight-normalised, "
            f"norm_last_layer={self.norm_last_layer}"
        )


def dino_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """The registry's heads builder: ``{"dino_head": DINOHead(feature_dim, ...)}`` from
    ``proj_hidden_dim``, ``proj_bottleneck_dim``, ``output_dim``, ``proj_batch_norm``
    (default True) and ``norm_last_layer`` (default True) of ``hparams``.

    BatchNorm in the head (an option of the paper's code, off for ViTs): the small CNN's
    pooled post-ReLU features are much alike from image to image, and without it the
    teacher's outputs differ so little that centring flattens them to the uniform
    distribution. In a check on 4,000 Fashion-MNIST images (3 epochs, batch 128) the teacher
    entropy ended at 7.47 nats without BatchNorm (log K = 7.62, collapse) and at 5.90 with it.

    Example:
        >>> from metricssl.ssl.dino import dino_heads
        >>> hp = {"proj_hidden_dim": 64, "proj_bottleneck_dim": 16, "output_dim": 32}
        >>> dino_heads(128, hp)["dino_head"].output_dim
        32
    """
    return {
        "dino_head": DINOHead(
            feature_dim,
            hidden_dim=hparams["proj_hidden_dim"],
            bottleneck_dim=hparams["proj_bottleneck_dim"],
            output_dim=hparams["output_dim"],
            batch_norm=hparams.get("proj_batch_norm", True),
            norm_last_layer=hparams.get("norm_last_layer", True),
        )
    }


@dataclass(frozen=True)
class DINOConfig(MomentumConfigMixin, MethodConfig):
    """DINO's hyper-parameters: the head, the temperatures, centring and the teacher.

    ``momentum`` is the paper's 0.996 (the registry said 0.99 before; pass 0.99 for a short run
    whose teacher must keep up). ``freeze_last_layer_iters`` is 200: the paper freezes the
    head's last layer for the first epoch, and 200 steps is about one Fashion-MNIST epoch at
    batch 256. ``output_dim`` is the head's width; :class:`DINO` itself reads it from the
    head when not given.

    Example:
        >>> from metricssl.ssl.dino import DINOConfig
        >>> DINOConfig().freeze_last_layer_iters
        200
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_bottleneck_dim: int = param(128, low=1, integer=True)
    output_dim: int = param(2048, low=1, integer=True)
    proj_batch_norm: bool = param(True)
    norm_last_layer: bool = param(True)
    warmup_teacher_temp: float = param(0.04, low=0, low_inclusive=False)
    teacher_temp: float = param(0.04, low=0, low_inclusive=False)
    warmup_teacher_temp_steps: int = param(0, low=0, integer=True)
    student_temp: float = param(0.1, low=0, low_inclusive=False)
    center_momentum: float = param(0.9, low=0, high=1)
    momentum: float = param(0.996, low=0, high=1)
    final_momentum: float = param(1.0, low=0, high=1)
    freeze_last_layer_iters: int = param(200, low=0, integer=True)


class DINO(MomentumTargets, SSLMethod):
    """DINO: self-distillation with no labels, a student against a momentum teacher.

    Caron, Touvron, Misra, Jegou, Mairal, Bojanowski and Joulin, "Emerging Properties in
    Self-Supervised Vision Transformers", ICCV 2021. The student (``backbone`` +
    ``dino_head``) sees every crop of the multi-crop recipe (``views[0]`` and ``views[1]``
    are the 2 global crops, the rest local ones); the teacher, a momentum copy of both, sees
    only the 2 global crops. The loss (:class:`~metricssl.losses.dino_loss.DINOLoss`) is the
    cross-entropy between the teacher's centred, sharpened softmax of each global crop and
    the student's softmax of every other crop, averaged over pairs. The centre is an EMA of
    the teacher's batch mean output (over every rank under torch.distributed), a buffer.

    Schedules, driven by ``on_step_end(step, total_steps)`` (the optimizer step counter is a
    buffer, ``steps_done``, so a checkpoint resumes them exactly):

    - the teacher follows the student with a momentum that rises on a cosine from
      ``momentum`` (0.996 in the paper) to ``final_momentum`` (1);
    - the teacher temperature rises linearly from ``warmup_teacher_temp`` to
      ``teacher_temp`` over ``warmup_teacher_temp_steps`` optimizer steps
      (:func:`~metricssl.losses.dino_loss.teacher_temperature`);
    - with a :class:`DINOHead`, its last layer is frozen (zero gradient) for the first
      ``freeze_last_layer_iters`` optimizer steps (the paper's first epoch).

    Logged (the paper's appendix follows the first and third to tell the collapse modes
    apart): ``teacher_entropy`` (mean entropy of a teacher row, nats: near ``log K`` when the
    output collapses to uniform), ``teacher_mean_entropy`` (entropy of the batch-mean teacher
    distribution: near 0 when one dimension dominates), ``teacher_student_kl`` (the loss minus
    ``teacher_entropy``: the mean KL divergence of the student from the teacher, near 0 in
    either collapse), ``center_norm`` (the centre's L2 norm) and ``teacher_temp``; the
    Trainer adds ``momentum``.

    Args:
        backbone: images -> features.
        dino_head: features -> ``K`` outputs; a :class:`DINOHead` (see :func:`dino_heads`)
            or any module (then ``output_dim`` must be given and ``freeze_last_layer_iters``
            must be 0).
        output_dim: ``K``; default the head's ``output_dim``.
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_steps, student_temp,
            center_momentum: see :class:`~metricssl.losses.dino_loss.DINOLoss`.
        momentum: the teacher momentum at step 0, in [0, 1] (0.996).
        final_momentum: the teacher momentum at the end of training, in [momentum, 1] (1).
        freeze_last_layer_iters: optimizer steps during which the head's last layer does not
            move (0: never frozen; default 200, see :class:`DINOConfig`).
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`. ``views`` must
            give the 2 global crops first; a :class:`~metricssl.augment.MultiCrop` whose
            crops do not fit ``input_shape`` is refused here.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.dino import DINO, DINOHead
        >>> from metricssl.ssl.method import Batch
        >>> backbone = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        >>> method = DINO(backbone, DINOHead(32, 64, 16, output_dim=100))
        >>> global_crops = [torch.rand(8, 1, 8, 8) for _ in range(2)]
        >>> local_crops = [torch.rand(8, 1, 4, 4) for _ in range(2)]
        >>> out = method.training_step(Batch(global_crops + local_crops))
        >>> out["loss"].backward()
        >>> method.on_step_end(1, 100)
        >>> sorted(out)  # doctest: +NORMALIZE_WHITESPACE
        ['center_norm', 'loss', 'teacher_entropy', 'teacher_mean_entropy',
         'teacher_student_kl', 'teacher_temp']
    """

    name = "dino"
    momentum_targets = {"teacher_backbone": "backbone", "teacher_head": "dino_head"}
    min_batch_size = 2
    num_views = 2
    num_global = 2

    def __init__(
        self,
        backbone: nn.Module,
        dino_head: nn.Module,
        output_dim: int | None = None,
        warmup_teacher_temp: float = DINOConfig.warmup_teacher_temp,
        teacher_temp: float = DINOConfig.teacher_temp,
        warmup_teacher_temp_steps: int = DINOConfig.warmup_teacher_temp_steps,
        student_temp: float = DINOConfig.student_temp,
        center_momentum: float = DINOConfig.center_momentum,
        momentum: float = DINOConfig.momentum,
        final_momentum: float = DINOConfig.final_momentum,
        freeze_last_layer_iters: int = DINOConfig.freeze_last_layer_iters,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_module("dino_head", dino_head)
        head_dim = getattr(dino_head, "output_dim", None)
        if output_dim is None:
            if head_dim is None:
                raise ValueError(
                    f"output_dim must be given: {type(dino_head).__name__} has no output_dim"
                )
            output_dim = head_dim
        check_number("output_dim", output_dim, low=1, integer=True)
        if head_dim is not None and head_dim != output_dim:
            raise ValueError(f"output_dim is {output_dim} but dino_head outputs {head_dim}")
        DINOConfig.check(
            momentum=momentum,
            final_momentum=final_momentum,
            freeze_last_layer_iters=freeze_last_layer_iters,
        )
        if freeze_last_layer_iters > 0 and not isinstance(dino_head, DINOHead):
            raise TypeError(
                "freeze_last_layer_iters > 0 needs a DINOHead (its last layer is what is "
                f"frozen), got {type(dino_head).__name__}"
            )
        # Checks the temperatures, the warmup and center_momentum under these names.
        self.criterion = DINOLoss(
            output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_steps=warmup_teacher_temp_steps,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        check_multi_crop_views(views, self.input_shape, self.num_global)
        self.dino_head = dino_head
        self.init_momentum_targets(momentum, final_momentum)
        self.output_dim = int(output_dim)
        self.freeze_last_layer_iters = int(freeze_last_layer_iters)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.int64))

    # -- schedules ------------------------------------------------------------------------------

    def teacher_temperature(self, step: int | torch.Tensor | None = None) -> float | torch.Tensor:
        """The teacher temperature at ``step`` (default: the steps done so far)."""
        return self.criterion.teacher_temperature(self.steps_done if step is None else step)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step)
        super().on_step_end(step, total_steps)  # the teacher's EMA update

    # -- training -------------------------------------------------------------------------------

    def _head_kwargs(self) -> dict:
        if self.freeze_last_layer_iters == 0:
            return {}
        live = (self.steps_done >= self.freeze_last_layer_iters).float()
        return {"last_layer_grad": live}

    def _student(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Student outputs of all crops, in order: one backbone pass per run of same-size
        crops (the global crops, then the local ones), one head pass for all of them."""
        features = features_by_size(self.backbone, views)
        return self.dino_head(features, **self._head_kwargs())

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        self.check_batch(batch)
        views = list(batch.views)
        n = views[0].shape[0]
        for i, v in enumerate(views):
            if v.shape[0] != n:
                raise ValueError(f"views[{i}] has {v.shape[0]} images, views[0] has {n}")
        if views[1].shape != views[0].shape:
            raise ValueError(
                f"the two global crops differ in shape: {tuple(views[0].shape)} and "
                f"{tuple(views[1].shape)}"
            )
        student = self._student(views).split(n)
        with torch.no_grad():
            teacher = self.teacher_head(
                self.teacher_backbone(torch.cat(views[: self.num_global]))
            ).split(n)
        temp = self.teacher_temperature()
        targets = self.criterion.teacher_probs(teacher, self.steps_done)
        loss = self.criterion.cross_entropy(student, targets)
        stats = self.criterion.statistics(targets)
        # Every teacher crop has the same number of student partners, so the mean
        # cross-entropy is the mean teacher entropy plus the mean KL divergence.
        stats["teacher_student_kl"] = loss.detach().float() - stats["teacher_entropy"]
        # After the loss: the targets above use the centre of the previous batches only.
        self.criterion.update_center(teacher)
        stats["center_norm"] = self.criterion.center.detach().norm().float()
        stats["teacher_temp"] = torch.as_tensor(
            temp, dtype=torch.float32, device=loss.device
        ).reshape(())
        return {"loss": loss, **stats}
