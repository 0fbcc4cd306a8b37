"""SwAV: predict the Sinkhorn cluster codes of one crop from the other crops (multi-crop)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.checks import check_size
from ..augment.multi_crop import MultiCrop, multi_crop
from ..augment.recipes import Range, Size
from ..core import common as c_f
from ..core.distributed import gather_with_grad
from ..core.validation import check_module, check_number
from ..losses.swav_loss import SwAVLoss
from ..models.heads import ProjectionHead, PrototypesHead
from .counters import HostCounters
from .method import Batch, MethodConfig, SSLMethod, check_multi_crop_views, features_by_size, param
from .queue import ring_enqueue


def swav_views(
    image_size: Size,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    n_local: int = 4,
    global_size: Size | None = None,
    local_size: Size | None = None,
    global_scale: Range | None = None,
    local_scale: Range | None = None,
    saturation: float = 0.4,
    global_blur_p: float = 0.5,
    local_blur_p: float = 0.5,
    global_solarize_p: float = 0.0,
    **options,
) -> MultiCrop:
    """SwAV's multi-crop recipe, sized for small images: 2 global crops + ``n_local`` local.

    The paper (Caron et al., NeurIPS 2020) takes 2 x 224 px crops of scale (0.14, 1) and
    6 x 96 px crops of scale (0.05, 0.14) from ImageNet images, with flip, colour jitter
    (p = 0.8), grayscale (p = 0.2) and Gaussian blur (p = 0.5) on every crop and no
    solarisation. Here, by default:

    - global crops have the image's size (28 px for Fashion-MNIST, 8 px for sklearn digits)
      and local crops half of it (14 px, 4 px): the ratio is close to the paper's 96 / 224,
      and the small CNN backbones pool adaptively, so any size goes through them;
    - from 32 px up the scales are the paper's; below, (0.3, 1) and (0.1, 0.3): on a 28 px
      image a 5% crop is a 6 px patch, often plain background, which no other crop can be
      predicted from;
    - ``n_local = 4`` rather than 6: a 14 px crop costs a quarter of a 28 px one, so the
      step costs about 3 global crops, 1.5 times a two-view method, on a CPU.

    Args:
        image_size: size of the input images, int or (height, width).
        mean, std: optional per-channel normalisation, both or neither.
        n_local: local crops per image (>= 0).
        global_size, local_size: crop output sizes; default the image size and half of it.
            Neither may be larger than the image.
        global_scale, local_scale: crop area ranges; None picks the defaults above.
        saturation, global_blur_p, local_blur_p, global_solarize_p: as in
            :func:`~metricssl.augment.multi_crop` (blur p = 0.5 everywhere, no solarisation,
            as in the paper).
        **options: any other argument of :func:`~metricssl.augment.multi_crop` (``flip_p``,
            ``jitter_p``, ``brightness``, ...).

    Example:
        >>> import torch
        >>> from metricssl.ssl.swav import swav_views
        >>> views = swav_views(28)(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))
        >>> [v.shape[-1] for v in views]
        [28, 28, 14, 14, 14, 14]
    """
    size = check_size("image_size", image_size)
    global_size = size if global_size is None else check_size("global_size", global_size)
    if local_size is None:
        local_size = tuple(max(1, round(s / 2)) for s in global_size)
    small = min(size) < 32
    if global_scale is None:
        global_scale = (0.3, 1.0) if small else (0.14, 1.0)
    if local_scale is None:
        local_scale = (0.1, 0.3) if small else (0.05, 0.14)
    return multi_crop(
        global_size,
        local_size,
        n_local,
        image_size=size,
        global_scale=global_scale,
        local_scale=local_scale,
        saturation=saturation,
        global_blur_p=global_blur_p,
        local_blur_p=local_blur_p,
        global_solarize_p=global_solarize_p,
        mean=mean,
        std=std,
        **options,
    )


def swav_heads(feature_dim: int, hparams: dict) -> dict[str, nn.Module]:
    """SwAV's projection MLP (``proj_hidden_dim`` -> ``proj_output_dim``) and
    ``num_prototypes`` prototypes (a bias-free linear layer on the normalised projection)."""
    num_prototypes = hparams["num_prototypes"]
    check_number("num_prototypes", num_prototypes, low=1, integer=True)
    out = int(hparams["proj_output_dim"])
    return {
        "projection_head": ProjectionHead(feature_dim, int(hparams["proj_hidden_dim"]), out),
        "prototype_head": nn.Linear(out, int(num_prototypes), bias=False),
    }


def check_num_prototypes(num_prototypes: int, dataset_size: int) -> None:
    """Refuse more prototypes than training images: the equipartition constraint would
    spread every image over several prototypes, and some prototypes could never be anyone's
    cluster.

    Example:
        >>> from metricssl.ssl.swav import check_num_prototypes
        >>> check_num_prototypes(100, 60000)
        >>> check_num_prototypes(3000, 1797)
        Traceback (most recent call last):
        ...
        ValueError: num_prototypes=3000 is larger than the training set (1797 images); use at most 1797 prototypes
    """
    check_number("num_prototypes", num_prototypes, low=1, integer=True)
    check_number("dataset_size", dataset_size, low=1, integer=True)
    if num_prototypes > dataset_size:
        raise ValueError(
            f"num_prototypes={num_prototypes} is larger than the training set "
            f"({dataset_size} images); use at most {dataset_size} prototypes"
        )


@dataclass(frozen=True)
class SwAVConfig(MethodConfig):
    """SwAV's hyper-parameters: projection widths, prototypes, Sinkhorn and the queue.

    ``freeze_prototypes_iters`` is 200: the paper keeps the prototypes fixed for the first
    epoch (313 iterations in its code), and 200 steps is about one Fashion-MNIST epoch at
    batch 256.

    Example:
        >>> from metricssl.ssl.swav import SwAVConfig
        >>> SwAVConfig().queue_start_step
        0
    """

    proj_hidden_dim: int = param(512, low=1, integer=True)
    proj_output_dim: int = param(128, low=1, integer=True)
    num_prototypes: int = param(100, low=1, integer=True)
    temperature: float = param(0.1, low=0, low_inclusive=False)
    sinkhorn_epsilon: float = param(0.05, low=0, low_inclusive=False)
    sinkhorn_iterations: int = param(3, low=1, integer=True)
    freeze_prototypes_iters: int = param(200, low=0, integer=True)
    queue_length: int = param(0, low=0, integer=True)
    queue_start_step: int = param(0, low=0, integer=True)


class SwAV(HostCounters, SSLMethod):
    """SwAV: swapped prediction of online cluster codes, with multi-crop.

    Caron, Misra, Mairal, Goyal, Bojanowski and Joulin, "Unsupervised Learning of Visual
    Features by Contrasting Cluster Assignments", NeurIPS 2020. Every crop goes through the
    backbone (one pass per crop resolution) and the projection head, is L2-normalised to
    ``z`` and scored against ``K`` prototypes ``c_k`` (the rows of ``prototype_head``'s
    weight, rescaled to unit length before every step, as in the paper): ``s = z . c``.
    The codes of the two global crops (``views[0]``, ``views[1]``) are the Sinkhorn-Knopp
    equipartitioned assignments of their scores; every other crop, global or local
    (``views[2:]``), predicts them with ``softmax(s / temperature)``
    (:class:`~metricssl.losses.swav_loss.SwAVLoss`).

    Prototypes: frozen for the first ``freeze_prototypes_iters`` optimizer steps, as the
    paper does for its first epoch. While frozen they receive a zero gradient (so DDP and
    AMP see an ordinary parameter) and their rows are rescaled to unit length after every
    step, so whatever weight decay did to their length is undone and their direction does
    not change.

    Queue (``queue_length > 0``): the paper's remedy for batches that are small next to
    ``K``. The unit projections of the global crops of the last ``queue_length`` images
    (gathered from every rank, so every rank holds the same queue and a checkpoint resumes
    it exactly) are kept, one queue per global crop; their scores against the current
    prototypes join the batch's in the Sinkhorn iterations only. It is filled from optimizer
    step ``queue_start_step`` on (0: from the start; the paper starts it after 15 of 200
    epochs, once the features change slowly) and used as soon as it holds any rows.
    The queue, its fill level and the step counter are buffers, so they are in
    ``state_dict()``; the counters have host copies
    (:class:`~metricssl.ssl.counters.HostCounters`), so a step reads no number back from
    the device.

    Logged: ``code_entropy``, the mean entropy (nats) of the global crops' codes (``log K``
    for uniform codes, 0 for one-hot ones); ``prototypes_used``, the fraction of prototypes
    that are the top code of at least one global crop in the batch (a collapse diagnostic);
    ``queue_filled`` with a queue.

    Args:
        backbone: images -> features.
        projection_head: features -> projections (normalised here).
        prototype_head: a bias-free ``nn.Linear(projection_dim, K)`` (or a
            :class:`~metricssl.models.heads.PrototypesHead`); its weight rows are the
            prototypes. See :func:`check_num_prototypes` for a bound on ``K``.
        temperature: of the predictions' softmax (0.1).
        sinkhorn_epsilon: entropy regularisation of the codes (0.05).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3).
        freeze_prototypes_iters: optimizer steps during which the prototypes do not move
            (default 200, see :class:`SwAVConfig`).
        queue_length: past global-crop projections kept per global crop (0: no queue).
        queue_start_step: optimizer step from which the queue is filled.
        feature_dim, views, preprocess, input_shape: see :class:`SSLMethod`. ``views`` must
            give the 2 global crops first; a :class:`~metricssl.augment.MultiCrop` whose
            crops do not fit ``input_shape`` is refused here.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from metricssl.ssl.method import Batch
        >>> from metricssl.ssl.swav import SwAV
        >>> backbone = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        >>> method = SwAV(backbone, nn.Linear(32, 16), nn.Linear(16, 10, bias=False))
        >>> global_crops = [torch.rand(8, 1, 8, 8) for _ in range(2)]
        >>> local_crops = [torch.rand(8, 1, 4, 4) for _ in range(2)]
        >>> out = method.training_step(Batch(global_crops + local_crops))
        >>> out["loss"].backward()
        >>> method.on_step_end(1, 100)
        >>> sorted(out)
        ['code_entropy', 'loss', 'prototypes_used']
    """

    name = "swav"
    min_batch_size = 2
    num_views = 2
    num_global = 2

    def __init__(
        self,
        backbone: nn.Module,
        projection_head: nn.Module,
        prototype_head: nn.Module,
        temperature: float = SwAVConfig.temperature,
        sinkhorn_epsilon: float = SwAVConfig.sinkhorn_epsilon,
        sinkhorn_iterations: int = SwAVConfig.sinkhorn_iterations,
        freeze_prototypes_iters: int = SwAVConfig.freeze_prototypes_iters,
        queue_length: int = SwAVConfig.queue_length,
        queue_start_step: int = SwAVConfig.queue_start_step,
        feature_dim: int | None = None,
        views: Callable | None = None,
        preprocess: Callable | None = None,
        input_shape: Sequence[int] | None = None,
    ):
        super().__init__(backbone, feature_dim, views, preprocess, input_shape)
        check_module("projection_head", projection_head)
        _check_prototype_head(prototype_head)
        SwAVConfig.check(
            freeze_prototypes_iters=freeze_prototypes_iters,
            queue_length=queue_length,
            queue_start_step=queue_start_step,
        )
        # Checks temperature, sinkhorn_epsilon and sinkhorn_iterations under these names.
        self.criterion = SwAVLoss(
            temperature, sinkhorn_epsilon, sinkhorn_iterations, gather_distributed=True
        )
        check_multi_crop_views(views, self.input_shape, self.num_global)
        self.projection_head = projection_head
        self.prototype_head = prototype_head
        self.temperature = float(temperature)
        self.sinkhorn_epsilon = float(sinkhorn_epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.freeze_prototypes_iters = int(freeze_prototypes_iters)
        self.queue_length = int(queue_length)
        self.queue_start_step = int(queue_start_step)
        self.normalize_prototypes_()
        dim = prototype_head.weight.shape[1]
        # The queue's shape is fixed here (the projection width is the prototypes' width),
        # so a fresh module loads a checkpointed queue as is.
        self.register_buffer("queue", torch.zeros(self.num_global, self.queue_length, dim))
        self.register_counter("queue_ptr")
        self.register_counter("queue_filled")
        self.register_counter("steps_done")

    @property
    def num_prototypes(self) -> int:
        return int(self.prototype_head.weight.shape[0])

    def check_dataset_size(self, num_samples: int) -> None:
        check_num_prototypes(self.num_prototypes, num_samples)

    @torch.no_grad()
    def normalize_prototypes_(self) -> None:
        """Rescale every prototype (weight row) to unit length, in place."""
        w = self.prototype_head.weight
        w.copy_(F.normalize(w.float(), dim=1).to(w.dtype))

    def _project(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unit projections of all crops, in order; one backbone pass per run of same-size
        crops (the global crops, then the local ones), one head pass for all of them."""
        z = self.projection_head(features_by_size(self.backbone, views))
        return F.normalize(z.to(c_f.accumulation_dtype(z.dtype)), dim=1)

    def _prototypes(self) -> torch.Tensor:
        """The prototype matrix; while frozen, it passes a zero gradient back."""
        w = self.prototype_head.weight
        if self.freeze_prototypes_iters == 0:
            return w
        # Same value as w; the gradient is multiplied by 0 or 1 on the device, without asking
        # the host which step it is (a synchronisation per step on a GPU).
        live = (self.steps_done >= self.freeze_prototypes_iters).to(w.dtype)
        return w.detach() + live * (w - w.detach())

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
        self.normalize_prototypes_()
        z = self._project(views)
        with torch.autocast(device_type=z.device.type, enabled=False):
            w = self._prototypes().to(z.dtype)
            scores = (z @ w.T).split(n)
            queue_scores = None
            filled = self.counter("queue_filled")
            if self.queue_length > 0 and filled > 0:
                wq = w.detach()
                queue_scores = [self.queue[i, :filled].to(z.dtype) @ wq.T for i in range(2)]
            codes = self.criterion.codes(scores[: self.num_global], queue_scores)
            loss = self.criterion.swapped_prediction(scores, codes)
        out = {"loss": loss, **self._code_stats(codes)}
        if self.queue_length > 0:
            if self.counter("steps_done") >= self.queue_start_step:
                self._enqueue(z[: self.num_global * n].detach().view(self.num_global, n, -1))
            out["queue_filled"] = self.queue_filled.detach().float()
        return out

    @torch.no_grad()
    def _code_stats(self, codes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        q = torch.cat(codes).float()
        entropy = -(q * q.clamp_min(1e-12).log()).sum(dim=1).mean()
        top = torch.zeros(q.shape[1], device=q.device).index_fill_(0, q.argmax(dim=1), 1.0)
        return {"code_entropy": entropy, "prototypes_used": top.mean()}

    @torch.no_grad()
    def _enqueue(self, z: torch.Tensor) -> None:
        """Write every rank's (2, B, D) global-crop projections over the oldest entries."""
        # Rank order: every rank writes the same rows, so the queues stay identical.
        rows = gather_with_grad(z.transpose(0, 1).reshape(z.shape[1], -1))
        z = rows.reshape(rows.shape[0], self.num_global, -1).transpose(0, 1)
        ring_enqueue(self, self.queue, z, dim=1)

    def on_step_end(self, step: int, total_steps: int) -> None:
        self.set_counter("steps_done", step)
        # Keep the stored prototypes on the unit sphere between steps too (checkpoints, and
        # the frozen phase, where only weight decay changed their length).
        self.normalize_prototypes_()


def _check_prototype_head(head) -> None:
    if isinstance(head, PrototypesHead):
        return
    if not isinstance(head, nn.Linear):
        raise TypeError(
            "prototype_head must be an nn.Linear without bias (or a PrototypesHead), got "
            f"{type(head).__name__}"
        )
    if head.bias is not None:
        raise ValueError("prototype_head must have no bias: nn.Linear(dim, K, bias=False)")
    if head.out_features < 1:
        raise ValueError(f"prototype_head must have at least 1 prototype, got {head.out_features}")
