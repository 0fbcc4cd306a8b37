"""Trainer: one training loop for every method in :data:`metricssl.ssl.registry.METHODS`.

    >>> trainer = Trainer(method="simclr", dataset="fashion-mnist", out="runs/x")  # doctest: +SKIP
    >>> trainer.fit()  # doctest: +SKIP
    >>> encoder = trainer.method.backbone  # doctest: +SKIP

Built from typed pieces, in order: the data (:func:`~metricssl.ssl.datasets.resolve_data`),
the model (:func:`~metricssl.ssl.builders.build_model`, from the method's typed config), the
training settings (:func:`~metricssl.ssl.builders.training_settings`), the optimiser and its
schedule (:func:`~metricssl.ssl.builders.build_optimizer`,
:func:`~metricssl.ssl.builders.build_schedule`). The Trainer asks the method only what the
:class:`~metricssl.ssl.method.SSLMethod` contract says (``needs_labels``,
``samples_per_class_in``, ...); no method has a case of its own.

What one epoch does, in order: train over a fresh permutation of the training images
(augmented views made on the training device, AMP, gradient accumulation, learning-rate
schedule, the method's momentum updates, the online linear probe when there are labels);
then, on rank 0, a clean pass over a held-out labelled split for the weighted-kNN score and
the probe's accuracy, and over the same images for the collapse diagnostics; then a
checkpoint (``OUT/checkpoints/last.pt``, written atomically) and the CSV log
(``OUT/log.csv``, rewritten from the history stored in the checkpoint, so the two never
disagree).

Exact resume: the checkpoint holds the model (momentum encoders and queues included, as
registered parameters and buffers), the optimizer, the schedule, the online linear probe
(:mod:`~metricssl.ssl.linear_probe`: weights, optimizer, schedule), the AMP scaler, the epoch
and step counters, every random generator (Python, NumPy, torch CPU and CUDA, the
augmentation generator of each rank) and the history. The data order of epoch ``e`` is a
function of ``(seed, e)`` only. A run resumed from the checkpoint of epoch ``e`` therefore
continues exactly as the uninterrupted run would have.

A resume compares the checkpoint's recorded training settings (optimizer, lr, epochs, seed,
batch size, steps per epoch, AMP, ...) with this run's: a difference is refused
(:class:`~metricssl.ssl.checkpoint.CheckpointError` listing them) unless
``allow_changed_settings=True``, which applies them (see :meth:`Trainer.load_state`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..core import common as c_f
from ..core.atomic import atomic_write
from ..core.distributed import (
    init_from_environment,
    is_distributed,
    rank,
    training_device,
    world_size,
)
from ..core.validation import check_bool, check_choice, check_number
from ..data.items import MODES, image_size_pair
from ..data.splits import stratified_split
from ..samplers import MPerClassSampler
from .amp import AMP_MODES, autocast_dtype
from .builders import build_model, build_optimizer, build_schedule, training_settings
from .checkpoint import (
    CheckpointError,
    capture_rng_state,
    read_checkpoint,
    restore_generator,
    restore_rng_state,
    save_checkpoint,
    training_changes,
)
from .datasets import ImageData, resolve_data
from .embed import embed_dataset
from .linear_probe import OnlineLinearProbe, ProbedMethod
from .method import Batch, SSLMethod
from .monitor import collapse_diagnostics, knn_accuracy, warn_if_collapsed
from .registry import (
    BACKBONES,
    MEMORY_FORMATS,
    METHODS,
    OPTIMIZERS,
    canonical_method_name,
    check_backbone,
    method_config,
    stored_hparams,
)

# Images used to measure collapse when the data have no labels.
_DIAGNOSTIC_IMAGES = 5_000
# On CUDA the augmentation/step timing needs a synchronisation; do it on one step in N.
_CUDA_TIMING_EVERY = 20
# What the progress bar shows: (metric, label, format); the last epoch's kNN and collapse
# numbers stay on the bar while the next epoch trains.
_SHOWN = (
    ("loss", "loss", ".4g"),
    ("lr", "lr", ".3g"),
    ("knn_accuracy", "knn", ".4f"),
    ("probe_accuracy", "probe", ".4f"),
    ("probe_train_accuracy", "probe_train", ".3f"),
    ("embedding_std", "std", ".3f"),
    ("effective_rank", "erank", ".1f"),
)
_CARRIED = ("knn_accuracy", "probe_accuracy", "embedding_std", "effective_rank", "collapse")


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a Trainer resumed: the checkpoint, where it stood (``epoch`` of ``epochs``,
    optimizer ``step``) and the settings that changed (``"lr 0.06 -> 0.5"``; empty when the
    run continues exactly).

    Example:
        >>> str(Resumed("runs/x/checkpoints/last.pt", 6, 2340, 10, ()))
        'resuming runs/x/checkpoints/last.pt at epoch 6/10 (step 2340)'
    """

    checkpoint: str
    epoch: int
    step: int
    epochs: int
    changed: tuple[str, ...] = ()

    def __str__(self) -> str:
        line = f"resuming {self.checkpoint} at epoch {self.epoch}/{self.epochs} (step {self.step})"
        if self.changed:
            line += f" with changed settings: {'; '.join(self.changed)}"
        return line


class Trainer:
    """Trains a self-supervised (or supervised metric-learning) method on a dataset.

    Args:
        method: a name from :data:`~metricssl.ssl.registry.METHODS` (``simclr``, ``moco``,
            ``byol``, ``simsiam``, ``barlow_twins``, ``vicreg``, ``supervised``), or a
            ready :class:`~metricssl.ssl.method.SSLMethod` (then ``backbone`` and
            ``hparams`` are not used, and :func:`load_checkpoint` needs the same module).
        dataset: a dataset name (``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``,
            ``cifar100``), an image folder, an ``(images, labels)`` pair (labels may be None)
            or a torch Dataset; see :func:`~metricssl.ssl.datasets.resolve_data`.
        data_dir: where the named dataset's files are (default: the usual places).
        download: download a named dataset that is not found.
        image_size: train at this size (an int for a square, or ``(height, width)``): each
            image is scaled to cover it (aspect ratio kept) and its centre cropped, in the
            DataLoader workers; None (default) keeps the data's own size.
        mode: ``"RGB"`` (3 channels) or ``"L"`` (1 grey channel); None (default) keeps the
            data's channels. ``image_size`` and ``mode`` are recorded in the checkpoint; a run
            resumed at another size or channel count is refused. See
            :func:`~metricssl.data.resolve_data` (they cannot resize a ready ``ImageData``
            or a ``DataLoader``).
        backbone: ``small_cnn``, ``resnet18``, ``resnet50``, ``vit_tiny``, ``vit_small`` or
            any module (images -> features); None (default): the method's, ``small_cnn``
            (``vit_tiny`` for ``mae``, which needs a Vision Transformer).
        backbone_kwargs: arguments of the named backbone, e.g. ``{"embedding_dim": 256}``,
            or of a spec's builder. A spec names any other backbone: ``timm:NAME``,
            ``torchvision:NAME`` or ``package.module:attr`` (:mod:`metricssl.models.zoo`);
            unlike a module object, a checkpoint stores it and rebuilds the backbone.
        epochs: passes over the training split.
        batch_size: images per step per process (default: the method's).
        lr: base learning rate (default: the method's); reached after warmup, then cosine
            decay to ``lr * final_lr_factor``.
        optimizer: ``sgd`` (momentum 0.9), ``adam``, ``adamw`` or ``lars`` (default: the
            method's).
        weight_decay: default: the method's.
        warmup_epochs: linear warmup length in epochs (may be fractional).
        final_lr_factor: the learning rate at the end, as a fraction of ``lr``.
        accumulate_steps: micro-batches per optimizer step (gradient accumulation).
        amp: ``auto`` (bf16 on CUDA where supported, else fp16; off on CPU), ``off``,
            ``bf16`` or ``fp16`` (CUDA only).
        memory_format: layout of the model's convolution weights and of the views:
            ``channels_last`` (NHWC), ``contiguous`` (NCHW) or ``auto``: channels-last for a
            named backbone on CPU, where every method's step ran 1.12-1.34x faster with
            the default models (BENCHMARKS.md), and on CUDA under AMP (tensor cores
            convolve NHWC); else contiguous. A backbone given
            as a module or a spec stays contiguous under ``auto``: code such as
            ``x.view(n, -1)`` after a convolution fails on a channels-last tensor.
        hparams: method hyper-parameters (temperature, queue_size, head widths, loss/miner
            for ``supervised``): fields of the method's config (``SimCLRConfig``, ...; see
            :func:`~metricssl.ssl.registry.method_config`).
        loss, miner: shortcuts for ``hparams["loss"]``/``hparams["miner"]`` (``supervised``;
            default MultiSimilarityLoss with MultiSimilarityMiner; a ``loss`` given without a
            ``miner`` runs without one).
        out: the run folder (checkpoints and log).
        seed: seeds the model initialisation, the data order and the augmentations.
        device: ``auto`` (CUDA when available, else the CPU) or any torch device; ``cuda``
            without an index is ``cuda:LOCAL_RANK`` under torchrun (see
            :func:`~metricssl.utils.distributed.training_device`).
        num_workers: DataLoader workers for datasets read from disk (in-memory images are
            indexed directly).
        val_fraction: share of the labelled training images held out (stratified) for the
            online kNN score; 0 disables it. Those images are not trained on.
        knn_k, knn_temperature: the weighted kNN's neighbours and temperature (200, 0.1).
        knn_every: run the kNN/collapse evaluation every this many epochs (and always
            after the last one).
        knn_max_references: labelled training images used as kNN references (a fixed
            stratified subset), to bound the per-epoch evaluation time.
        linear_probe: train an online linear classifier on the detached evaluation features
            alongside the method when the training data have labels (else nothing happens):
            its running training accuracy (``probe_train_accuracy``) and its accuracy on the
            held-out split (``probe_accuracy``) are logged each epoch and shown on the
            progress bar. It never changes the method's training (see
            :mod:`metricssl.ssl.linear_probe`); it costs one forward pass of the clean batch
            per step.
        resume: ``"auto"`` continues from ``OUT/checkpoints/last.pt`` when it exists,
            ``True`` requires that file, ``False`` starts afresh (overwriting), a path
            resumes from that file. The checkpoint must be of the same method and model
            (backbone, heads, hyper-parameters, image shape), else CheckpointError; so must
            the training settings it recorded, unless ``allow_changed_settings``.
        allow_changed_settings: resume although this run's training settings (lr, epochs,
            seed, weight decay, batch size, ...) differ from the checkpoint's, and apply
            them: the new learning rate and weight decay replace the saved ones, the
            schedule spans the new ``epochs``. The optimizer itself cannot change. Without
            it such a resume raises CheckpointError listing the differences.
        progress: show the tqdm progress bar.
        steps_per_epoch: cap on optimizer steps per epoch (short runs, benchmarks, tests).
        eval_batch_size: images per forward pass in the clean evaluation pass.

    Attributes:
        method: the :class:`SSLMethod` being trained (``method.backbone`` is the encoder).
        history: one dict of metrics per finished epoch.
        resumed: a :class:`Resumed` (checkpoint, epoch, step, epochs, changed settings)
            when the run continued from a checkpoint, else None.
    """

    def __init__(
        self,
        method: str | SSLMethod = "simclr",
        dataset="digits",
        *,
        data_dir: str | os.PathLike | None = None,
        download: bool = False,
        image_size: int | tuple[int, int] | None = None,
        mode: str | None = None,
        backbone: str | nn.Module | None = None,
        backbone_kwargs: Mapping | None = None,
        epochs: int = 10,
        batch_size: int | None = None,
        lr: float | None = None,
        optimizer: str | None = None,
        weight_decay: float | None = None,
        warmup_epochs: float | None = None,
        final_lr_factor: float = 0.0,
        accumulate_steps: int = 1,
        amp: str = "auto",
        memory_format: str = "auto",
        hparams: Mapping | None = None,
        loss: str | None = None,
        miner: str | None = None,
        out: str | os.PathLike = "runs/ssl",
        seed: int = 0,
        device: str | torch.device = "auto",
        num_workers: int = 0,
        val_fraction: float = 0.1,
        knn_k: int = 200,
        knn_temperature: float = 0.1,
        knn_every: int = 1,
        knn_max_references: int = 10_000,
        linear_probe: bool = True,
        resume: bool | str | os.PathLike = "auto",
        allow_changed_settings: bool = False,
        progress: bool = True,
        steps_per_epoch: int | None = None,
        eval_batch_size: int = 512,
    ):
        if isinstance(method, SSLMethod):
            name = method.name
        else:
            method = name = canonical_method_name(method)
        spec = METHODS.get(name)
        check_number("epochs", epochs, low=1, integer=True)
        check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
        check_number("lr", lr, low=0, low_inclusive=False, allow_none=True)
        check_number("weight_decay", weight_decay, low=0, allow_none=True)
        check_number("warmup_epochs", warmup_epochs, low=0, allow_none=True)
        check_number("final_lr_factor", final_lr_factor, low=0, high=1)
        check_number("accumulate_steps", accumulate_steps, low=1, integer=True)
        check_choice("amp", amp, AMP_MODES)
        check_choice("memory_format", memory_format, MEMORY_FORMATS)
        check_number("seed", seed, low=0, integer=True)
        check_number("num_workers", num_workers, low=0, integer=True)
        check_number("val_fraction", val_fraction, low=0, high=1, high_inclusive=False)
        check_number("knn_k", knn_k, low=1, integer=True)
        check_number("knn_temperature", knn_temperature, low=0, low_inclusive=False)
        check_number("knn_every", knn_every, low=1, integer=True)
        check_number("knn_max_references", knn_max_references, low=1, integer=True)
        check_number("steps_per_epoch", steps_per_epoch, low=1, integer=True, allow_none=True)
        check_number("eval_batch_size", eval_batch_size, low=1, integer=True)
        check_bool("progress", progress)
        check_bool("download", download)
        check_bool("linear_probe", linear_probe)
        check_bool("allow_changed_settings", allow_changed_settings)
        image_size = image_size_pair(image_size)
        if mode is not None:
            check_choice("mode", mode, MODES)
        if optimizer is not None:
            check_choice("optimizer", optimizer, OPTIMIZERS)
        if backbone is not None:
            check_backbone(backbone)
        if not (resume in ("auto", True, False) or isinstance(resume, (str, os.PathLike))):
            raise TypeError(f"resume must be 'auto', True, False or a path, got {resume!r}")

        hparams = dict(hparams or {})
        # Shortcuts for the metric-learning loss and miner of the methods whose config has a
        # miner (supervised); NPID's "loss" is its own kind of hyper-parameter.
        for key, value in (("loss", loss), ("miner", miner)):
            if value is not None:
                if spec is None or not _has_field(spec.config, "miner"):
                    having = [n for n, s in METHODS.items() if _has_field(s.config, "miner")]
                    raise ValueError(
                        f"{key}= is for method {' or '.join(map(repr, having))}, not {name!r}"
                    )
                hparams[key] = value
        if loss is not None and miner is None:
            # The default miner goes with the default loss; another loss runs without one.
            hparams.setdefault("miner", None)
        if not isinstance(method, SSLMethod):
            method_config(name, hparams)  # a bad hyper-parameter is refused before any work

        self._setup_distributed(device)
        self.out = Path(out)
        self.checkpoint_path = self.out / "checkpoints" / "last.pt"
        self.log_path = self.out / "log.csv"
        self.seed = seed
        self.epochs = epochs
        self.accumulate_steps = accumulate_steps
        self.progress = progress and rank() == 0
        self.knn_k, self.knn_temperature = knn_k, knn_temperature
        self.knn_every = knn_every
        self.eval_batch_size = eval_batch_size
        self.allow_changed_settings = allow_changed_settings
        self.resumed: Resumed | None = None
        _seed_everything(seed)

        # A stream (IterableDataset, DataLoader) has an epoch of steps batches, not of images.
        stream_steps = None if steps_per_epoch is None else steps_per_epoch * accumulate_steps
        data = resolve_data(
            dataset,
            data_dir,
            "train",
            download,
            num_workers,
            image_size=image_size,
            mode=mode,
            batch_size=batch_size,
            steps=stream_steps,
        )
        self.dataset_name = str(dataset) if isinstance(dataset, (str, os.PathLike)) else "custom"
        self.input_shape = data.input_shape
        needs_labels = (method if isinstance(method, SSLMethod) else spec.cls).needs_labels
        self._split(data, val_fraction, knn_max_references, read_labels=needs_labels)
        self.method, self.method_name, self.build_config = build_model(
            method,
            self.train_data,
            backbone=backbone,
            backbone_kwargs=backbone_kwargs,
            hparams=hparams,
            num_classes=self.num_classes,
        )
        settings = training_settings(
            method,
            optimizer=optimizer,
            lr=lr,
            weight_decay=weight_decay,
            # A DataLoader's own batch size unless one is asked for (then they must agree).
            batch_size=batch_size if batch_size is not None else data.batch_size,
            warmup_epochs=warmup_epochs,
        )
        self.batch_size = settings.batch_size
        self._check_stream()
        self._check_batch_size()
        self._plan_steps(steps_per_epoch)
        self.amp_dtype = self._amp_dtype(amp)
        self.memory_format = self._memory_format(memory_format)
        self.probe = self._linear_probe(linear_probe)
        self._wrap_model()

        self.hyper = {
            "optimizer": settings.optimizer,
            "lr": float(settings.lr),
            "weight_decay": float(settings.weight_decay),
            "warmup_epochs": float(settings.warmup_epochs),
            "final_lr_factor": float(final_lr_factor),
            "batch_size": self.batch_size,
            "accumulate_steps": accumulate_steps,
            "world_size": world_size(),
            "epochs": epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "seed": seed,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "memory_format": str(self.memory_format).replace("torch.", ""),
            "dataset": self.dataset_name,
            # Recorded as lists/None, so a resume compares them with this run's as read back.
            "image_size": None if image_size is None else list(image_size),
            "mode": mode,
        }
        self.optimizer = build_optimizer(self.method, settings)
        self.scheduler = build_schedule(
            self.optimizer,
            self.total_steps,
            round(self.hyper["warmup_epochs"] * self.steps_per_epoch),
            final_lr_factor,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.augment_generator = torch.Generator(device=self.device)
        self.augment_generator.manual_seed(self._augment_seed())

        self.epoch = 0
        self.step = 0
        self.history: list[dict] = []
        self._maybe_resume(resume)

    # -- setup helpers ---------------------------------------------------------------------

    def _augment_seed(self) -> int:
        return self.seed * 7919 + 1 + rank()

    def _plan_steps(self, cap: int | None) -> None:
        """Optimizer steps per epoch (incomplete global batches are dropped) and in total."""
        global_batch = self.batch_size * world_size()
        micro_batches = len(self.train_data) // global_batch
        if micro_batches < self.accumulate_steps:
            raise ValueError(
                f"the training split has {len(self.train_data)} images: not enough for one "
                f"optimizer step of {self.accumulate_steps} x {global_batch} images; lower "
                f"batch_size or accumulate_steps"
            )
        self.full_steps_per_epoch = micro_batches // self.accumulate_steps
        self.steps_per_epoch = min(self.full_steps_per_epoch, cap or self.full_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * self.epochs

    def _linear_probe(self, wanted: bool) -> OnlineLinearProbe | None:
        """The online linear probe, when asked for and the training data have labels."""
        if not wanted or self.num_classes is None:
            return None
        labels = self.train_data.labels
        return OnlineLinearProbe.for_method(
            self.method, labels, self.input_shape, self.total_steps, self.device
        )

    def _wrap_model(self) -> None:
        """Move to the device and memory format; with the probe, the method and the probe in
        one module; under torch.distributed, SyncBatchNorm (CUDA) and DDP."""
        self.method.to(self.device, memory_format=self.memory_format)
        distributed = is_distributed()
        if distributed and self.device.type == "cuda" and self.method.sync_batchnorm:
            # SyncBatchNorm needs CUDA; on CPU (gloo) each rank normalises its own batch.
            self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.model: nn.Module = self.method
        if self.probe is not None:
            self.model = ProbedMethod(self.method, self.probe.module)
        if not distributed:
            return
        # Buffers are not broadcast: queues are filled identically on every rank from
        # gathered keys, and broadcasting them every step would cost a copy of the queue.
        with warnings.catch_warnings():
            # torch >= 2.12 deprecates the argument, yet its replacement still syncs buffers
            # at init and does not exist before; the argument still works as documented.
            warnings.filterwarnings("ignore", "`broadcast_buffers` is deprecated", FutureWarning)
            self.model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
            )

    def _setup_distributed(self, device) -> None:
        # The device first: NCCL binds its communicator to the current GPU when it starts.
        self.device = training_device(device)
        self._owns_process_group = init_from_environment(self.device)

    def _split(
        self, data: ImageData, val_fraction: float, max_references: int, read_labels: bool
    ) -> None:
        """Training images, and (with labels) a held-out query split and kNN references.

        Labels that only the items know (a Dataset without ``targets``) are read (every image
        once) only for a method that needs them; otherwise there is no held-out split."""
        labels = data.labels if data.labels_known or read_labels else None
        self.num_classes = None if labels is None else int(labels.max()) + 1
        self.val_data = self.reference_data = None
        if labels is None or val_fraction == 0:
            self.train_data = data
            return
        train_idx, val_idx = stratified_split(labels, val_fraction, self.seed)
        if len(val_idx) == 0:
            self.train_data = data
            return
        self.train_data = data.subset(train_idx)
        self.val_data = data.subset(val_idx)
        n_ref = len(train_idx)
        if n_ref > max_references:
            # A fixed stratified subset of the training split, so every epoch uses the same one.
            fraction = max_references / n_ref
            ref_idx, _ = stratified_split(self.train_data.labels, 1 - fraction, self.seed)
            ref_idx = ref_idx if len(ref_idx) else torch.arange(min(n_ref, max_references))
        else:
            ref_idx = torch.arange(n_ref)
        self.reference_data = self.train_data.subset(ref_idx)

    def _check_stream(self) -> None:
        """A stream (IterableDataset, DataLoader) gives batches, not images by position."""
        if self.train_data.random_access:
            return
        if type(self.method).on_epoch_start is not SSLMethod.on_epoch_start:
            raise ValueError(
                f"method {self.method_name!r} reads the training images by position (memory "
                f"bank or clustering); give a map-style Dataset, a folder, a manifest or "
                f"arrays instead of an IterableDataset or DataLoader"
            )
        if world_size() > 1:
            raise ValueError(
                "an IterableDataset or DataLoader would give every process the same batches; "
                "under torch.distributed give a map-style Dataset, a folder or a manifest"
            )

    def _check_batch_size(self) -> None:
        need = self.method.min_batch_size
        if self.batch_size < need:
            raise ValueError(
                f"batch_size {self.batch_size} is too small for method {self.method_name!r}: "
                f"it needs at least {need} images per batch (per process)"
            )
        # m images per class in each global batch, when the method asks for it.
        self.samples_per_class = self.method.samples_per_class_in(
            self.batch_size * world_size(), self.num_classes
        )

    def _amp_dtype(self, amp: str) -> torch.dtype | None:
        return autocast_dtype(amp, self.device)

    def _memory_format(self, choice: str) -> torch.memory_format:
        if choice == "auto":
            # Measured with the registered backbones; a spec's module may be the user's code.
            named = self.build_config is not None and self.build_config["backbone"] in BACKBONES
            # CPU: measured (oneDNN, 1.12-1.34x). CUDA: only under AMP, where cuDNN's
            # tensor-core convolutions work in NHWC and a contiguous input is transposed
            # around each one (PyTorch's channels-last guidance); fp32 stays contiguous.
            fast = self.device.type == "cpu" or (
                self.device.type == "cuda" and self.amp_dtype is not None
            )
            choice = "channels_last" if named and fast else "contiguous"
        return torch.channels_last if choice == "channels_last" else torch.contiguous_format

    # -- checkpoints --------------------------------------------------------------------------

    def _config(self) -> dict:
        return {"build": self.build_config, "training": self.hyper}

    def _maybe_resume(self, resume) -> None:
        if resume is False:
            return
        path = self.checkpoint_path if resume in ("auto", True) else Path(resume)
        if not path.is_file():
            if resume == "auto":
                return
            raise FileNotFoundError(f"no checkpoint to resume from at {str(path)!r}")
        resumed = self.load_state(read_checkpoint(path, map_location="cpu"), path)
        # Said as the progress bar would show it; logged for runs without one.
        c_f.LOGGER.info("%s", resumed)
        if self.progress:
            tqdm.write(str(resumed))

    def state_dict(self) -> dict:
        """Everything a checkpoint holds (see the module docstring)."""
        local_rng = {
            "global": capture_rng_state(self.device),
            "augment": self.augment_generator.get_state(),
            "augment_device": self.augment_generator.device.type,
        }
        if is_distributed():
            all_rng = [None] * world_size()
            dist.all_gather_object(all_rng, local_rng)
        else:
            all_rng = [local_rng]
        return {
            "method": self.method_name,
            "config": self._config(),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "rng": all_rng,
            "data_order": {"seed": self.seed, "epoch": self.epoch},
            **({} if self.probe is None else {"linear_probe": self.probe.state_dict()}),
        }

    def load_state(
        self,
        state: dict,
        source: str | os.PathLike = "checkpoint",
        allow_changed_settings: bool | None = None,
    ) -> Resumed:
        """Restore a :meth:`state_dict`: the method and model must match, and so must the
        recorded training settings unless ``allow_changed_settings`` (default: the
        Trainer's own), which applies this run's (see the class's ``allow_changed_settings``).

        Returns the :class:`Resumed` record, also kept as ``self.resumed``.

        Raises:
            CheckpointError: another method or model; training settings that differ, listed
                (``"lr 0.06 -> 0.5; epochs 10 -> 12"``), when not allowed; another optimizer.

        Example:
            >>> state = read_checkpoint("runs/x/checkpoints/last.pt")  # doctest: +SKIP
            >>> resumed = trainer.load_state(state, allow_changed_settings=True)  # doctest: +SKIP
            >>> resumed.epoch, resumed.changed  # doctest: +SKIP
            (6, ('epochs 10 -> 12',))
        """
        if allow_changed_settings is None:
            allow_changed_settings = self.allow_changed_settings
        check_bool("allow_changed_settings", allow_changed_settings)
        if state["method"] != self.method_name:
            raise CheckpointError(
                f"{source}: checkpoint of method {state['method']!r}, but this trainer runs "
                f"{self.method_name!r}"
            )
        stored = (state.get("config") or {}).get("build")
        if stored is not None and self.build_config is not None:
            stored = {**stored, "hparams": stored_hparams(stored["method"], stored["hparams"])}
            diff = sorted(
                k
                for k in self.build_config
                if k not in ("mean", "std") and stored.get(k) != self.build_config[k]
            )
            if diff:
                raise CheckpointError(
                    f"{source}: the checkpoint's model differs from this trainer's in "
                    f"{', '.join(diff)} ({', '.join(f'{k}={stored.get(k)!r}' for k in diff)})"
                )
        changes = training_changes(state, self.hyper, source, allow_changed_settings)
        if changes:
            state = self._with_this_runs_rates(state, source)
        try:
            self.method.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{source}: does not fit this model: {err}") from err
        self._load_probe(state.get("linear_probe"), source)
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] or not self.scaler.is_enabled():
            # A run without fp16 saved an empty scaler: an fp16 continuation (e.g. a CPU or
            # bf16 run resumed on a GPU without bf16) starts from a fresh scale.
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        rngs = state["rng"]
        if len(rngs) != world_size():
            warnings.warn(
                f"{source} was written by {len(rngs)} process(es), this run has "
                f"{world_size()}: random streams restart from the seed, so the continuation "
                f"is not bit-identical to an uninterrupted run",
                stacklevel=3,
            )
            _seed_everything(self.seed + self.epoch)
        else:
            self._restore_rng(rngs[rank()], source)
        self.resumed = Resumed(str(source), self.epoch, self.step, self.epochs, tuple(changes))
        return self.resumed

    def _load_probe(self, saved: dict | None, source) -> None:
        """The probe's weights, optimiser and schedule; a checkpoint without them (written
        before the probe existed, or without it) leaves a fresh probe, said in the log."""
        if self.probe is None:
            return
        if saved is None:
            c_f.LOGGER.info("%s has no linear probe: the probe starts afresh", source)
            return
        try:
            self.probe.load_state_dict(saved)
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{source}: the linear probe does not fit: {err}") from err

    def _with_this_runs_rates(self, state: dict, source) -> dict:
        """``state`` with this run's learning rates and weight decays: the saved optimizer
        groups and schedule carry the checkpoint's. The schedule's length, warmup and final
        factor are this run's already (they are not loaded)."""
        stored = (state.get("config") or {}).get("training") or {}
        if stored.get("optimizer", self.hyper["optimizer"]) != self.hyper["optimizer"]:
            raise CheckpointError(
                f"{source}: the optimizer cannot change on resume (its state is "
                f"{stored['optimizer']}'s); resume=False (--no-resume) starts afresh"
            )
        optimizer = dict(state["optimizer"])
        optimizer["param_groups"] = [
            {**saved, "weight_decay": group["weight_decay"]}
            for saved, group in zip(optimizer["param_groups"], self.optimizer.param_groups)
        ]
        scheduler = {**state["scheduler"], "base_lrs": list(self.scheduler.base_lrs)}
        return {**state, "optimizer": optimizer, "scheduler": scheduler}

    def _restore_rng(self, saved: dict, source) -> None:
        """This rank's random streams, mapped to this run's devices: what a checkpoint of
        another device set-up cannot give (a CUDA generator's state for a CPU generator, a
        GPU's stream on a machine without it) restarts from ``(seed, epoch)``, with a
        warning."""
        restarted = []
        saved_type = saved.get("augment_device")
        try:
            continued = restore_rng_state(saved["global"], self.device)
            augment_restored = restore_generator(
                self.augment_generator, saved["augment"], saved_type
            )
        except CheckpointError as err:
            raise CheckpointError(f"{source}: {err}") from err
        if not continued:
            restarted.append(f"the CUDA generator of {self.device} (not in the checkpoint)")
            torch.cuda.manual_seed(self.seed + self.epoch)
        if not augment_restored:
            restarted.append(
                f"the augmentation generator (saved on {saved_type or 'another device type'}, "
                f"this run's is on {self.device.type})"
            )
            self.augment_generator.manual_seed(self._augment_seed() + 1_000_003 * self.epoch)
        if restarted:
            warnings.warn(
                f"{source} was written on another device set-up: {' and '.join(restarted)} "
                f"restart from the seed, so the continuation is not bit-identical to an "
                f"uninterrupted run",
                stacklevel=4,
            )

    def save(self) -> Path | None:
        """Write ``OUT/checkpoints/last.pt`` and ``OUT/log.csv`` (rank 0; all ranks call it)."""
        state = self.state_dict()  # a collective under DDP: every rank takes part
        path = None
        if rank() == 0:
            path = save_checkpoint(state, self.checkpoint_path)
            self._write_log()
        if is_distributed():
            dist.barrier()
        return path

    def close(self) -> None:
        """Destroy the process group this Trainer started under torchrun (else nothing).

        Every rank calls it once training is over: a process that exits with a live gloo
        group can abort its peers (SIGABRT) while they still talk to it.
        """
        if self._owns_process_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        self._owns_process_group = False

    def _write_log(self) -> None:
        columns: list[str] = []
        for row in self.history:
            columns += [k for k in row if k not in columns]
        with atomic_write(self.log_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)

    # -- training -----------------------------------------------------------------------------

    def fit(self, epochs: int | None = None) -> dict:
        """Train up to epoch ``epochs`` (default: all), checkpointing after each epoch.

        Returns the last finished epoch's metrics (loss, lr, knn_accuracy, embedding_std,
        effective_rank, collapse, images_per_second, augment_share, ...), i.e. the final
        model's numbers, not the best epoch's.
        """
        stop = self.epochs if epochs is None else epochs
        check_number("epochs", stop, low=1, high=self.epochs, integer=True)
        while self.epoch < stop:
            bar = tqdm(
                total=self.steps_per_epoch,
                desc=f"{self.method_name} {self.epoch + 1}/{self.epochs}",
                unit="step",
                disable=not self.progress,
                dynamic_ncols=True,
            )
            try:
                row = self._train_epoch(self.epoch, bar)
                self.epoch += 1
                if self.epoch % self.knn_every == 0 or self.epoch == self.epochs:
                    row.update(self.evaluate())
                    bar.set_postfix_str(self._postfix(row))
            finally:
                bar.close()
            if row.get("collapse"):
                warn_if_collapsed(row, self.epoch)
            self.history.append(row)
            self.save()
        return dict(self.history[-1]) if self.history else {}

    def _epoch_batches(self, epoch: int) -> torch.Tensor:
        """(steps x accumulate, batch_size) indices of this rank for ``epoch``."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        global_batch = self.batch_size * world_size()
        n_micro = self.steps_per_epoch * self.accumulate_steps
        if self.samples_per_class is not None:
            order = self._m_per_class_order(g, n_micro * global_batch)
        else:
            order = torch.randperm(len(self.train_data), generator=g)
        order = order[: n_micro * global_batch].view(n_micro, world_size(), self.batch_size)
        return order[:, rank()]

    def _m_per_class_order(self, g: torch.Generator, length: int) -> torch.Tensor:
        sampler = MPerClassSampler(
            self.train_data.labels,
            m=self.samples_per_class,
            batch_size=self.batch_size * world_size(),
            length_before_new_iter=max(length, self.batch_size * world_size()),
        )
        saved = c_f.NUMPY_RANDOM
        # The sampler draws from c_f.NUMPY_RANDOM (PML's hook); a generator seeded per epoch
        # makes the order a function of (seed, epoch), like the plain permutation.
        c_f.NUMPY_RANDOM = np.random.RandomState(int(torch.randint(2**31, (1,), generator=g)))
        try:
            return torch.as_tensor(list(iter(sampler)), dtype=torch.int64)
        finally:
            c_f.NUMPY_RANDOM = saved

    def _train_epoch(self, epoch: int, bar) -> dict:
        self.model.train()
        self.method.on_epoch_start(epoch, self.train_data)
        batches = self._epoch_batches(epoch)
        # Sums stay on the device as tensors: no host synchronisation per step.
        sums: dict[str, torch.Tensor] = {}
        aug_time = step_time = 0.0
        images_seen = 0
        cuda = self.device.type == "cuda"
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        # Batches arrive on the device (pinned, non-blocking copies towards CUDA).
        stream = self.train_data.batches(batches.reshape(-1), self.batch_size, self.device)
        for micro, (images, labels) in enumerate(stream):
            # On CUDA, timing needs synchronisations: measure one step in N.
            timing = not cuda or micro % _CUDA_TIMING_EVERY == 0
            if timing and cuda:
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            images = images.to(self.device, non_blocking=True)
            if labels is not None:
                labels = labels.to(self.device, non_blocking=True)
            with torch.no_grad():
                views = self.method.make_views(images, self.augment_generator)
                views = [
                    v.contiguous(memory_format=self.memory_format) if v.ndim == 4 else v
                    for v in views
                ]
            if timing and cuda:
                torch.cuda.synchronize(self.device)
            t1 = time.perf_counter()
            indices = batches[micro].to(self.device, non_blocking=True)
            batch = Batch(views, labels, indices)
            out = self._forward_backward(batch, micro, check=timing, images=images)
            if timing:
                if cuda:
                    torch.cuda.synchronize(self.device)
                aug_time += t1 - t0
                step_time += time.perf_counter() - t0
            images_seen += images.shape[0]
            for key, value in out.items():
                sums[key] = sums[key] + value if key in sums else value
            if (micro + 1) % self.accumulate_steps == 0:
                bar.update(1)
                if self.progress and (self.step % 10 == 0 or micro + 1 == len(batches)):
                    shown = {"loss": float(out["loss"]), "lr": self._lr()}
                    if "probe_train_accuracy" in sums:  # the epoch's running accuracy
                        running = sums["probe_train_accuracy"] / (micro + 1)
                        shown["probe_train_accuracy"] = float(running)
                    if self.history:
                        shown.update({k: self.history[-1].get(k) for k in _CARRIED})
                    bar.set_postfix_str(self._postfix(shown))
        elapsed = time.perf_counter() - started
        n_micro = len(batches)
        means = {}
        if sums:
            keys = sorted(sums)
            # A method may log a value on another device than its loss (a count made on the
            # CPU): one copy per epoch puts them together.
            stacked = torch.stack([sums[k].to(self.device, torch.float32) for k in keys]) / n_micro
            if is_distributed():
                dist.all_reduce(stacked)
                stacked /= world_size()
            means = dict(zip(keys, stacked.tolist()))
        if not math.isfinite(means.get("loss", 0.0)):
            raise FloatingPointError(
                f"{self.method_name}: the loss is not finite in epoch {epoch + 1}; lower the "
                f"learning rate, or use amp='off'"
            )
        row = {"epoch": epoch + 1, "step": self.step, **means}
        row.update(
            {
                "lr": self._lr(),
                "epoch_seconds": elapsed,
                "images_per_second": images_seen * world_size() / max(elapsed, 1e-9),
                "augment_share": aug_time / max(step_time, 1e-9),
            }
        )
        momentum = getattr(self.method, "current_momentum", None)
        if momentum is not None:
            row["momentum"] = momentum(self.step, self.total_steps)
        return row

    def _forward_backward(
        self, batch: Batch, micro: int, check: bool, images: torch.Tensor | None = None
    ) -> dict:
        """One micro-batch: forward, backward, and after the last micro-batch of a step the
        optimizer steps. ``images``: the batch's clean images, for the linear probe (None:
        the probe sits this one out)."""
        last = (micro + 1) % self.accumulate_steps == 0
        inputs = (batch,)
        if self.probe is not None and images is not None:
            inputs = (batch, images.contiguous(memory_format=self.memory_format))
        # Under DDP, gradients are all-reduced only on the last micro-batch of a step.
        context = self.model.no_sync() if is_distributed() and not last else nullcontext()
        with context:
            with torch.autocast(
                device_type=self.device.type,
                dtype=self.amp_dtype or torch.float32,
                enabled=self.amp_dtype is not None,
            ):
                out = self.model(*inputs)
            loss = out["loss"]
            if check and not bool(torch.isfinite(loss.detach())):
                raise FloatingPointError(
                    f"{self.method_name}: the loss is {float(loss)} at step {self.step + 1}; "
                    f"lower the learning rate, or use amp='off'"
                )
            # One backward pass for DDP; the probe's input is detached, so the method's
            # parameters get the gradient of the method's loss alone.
            total = loss + out["probe_loss"] if "probe_loss" in out else loss
            self.scaler.scale(total / self.accumulate_steps).backward()
        if last:
            self.scaler.step(self.optimizer)
            if self.probe is not None:
                self.probe.step(self.scaler)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.step += 1
            self.method.on_step_end(self.step, self.total_steps)
        return {
            k: v.detach().float().reshape(())
            for k, v in out.items()
            if torch.is_tensor(v) and v.numel() == 1
        }

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """kNN and linear-probe accuracy on the held-out split (with labels) and collapse
        diagnostics.

        Runs on rank 0 (other ranks return an empty dict); the method is in eval mode during
        the clean pass and goes back to training mode after it.
        """
        if rank() != 0:
            return {}
        metrics: dict[str, float] = {}
        if self.val_data is not None:
            query = self._features(self.val_data)
            reference = self._features(self.reference_data)
            metrics["knn_accuracy"] = knn_accuracy(
                query,
                self.val_data.labels,
                reference,
                self.reference_data.labels,
                self.knn_k,
                self.knn_temperature,
            )
            if self.probe is not None:
                metrics["probe_accuracy"] = self.probe.accuracy(query, self.val_data.labels)
        else:
            n = min(len(self.train_data), _DIAGNOSTIC_IMAGES)
            query = self._features(self.train_data.subset(torch.arange(n)))
        metrics.update(collapse_diagnostics(query))
        return metrics

    def _features(self, data: ImageData) -> torch.Tensor:
        # Kept on the training device: the kNN check and diagnostics run there (one engine).
        return embed_dataset(self.method, data, self.eval_batch_size, self.device, out_device=None)

    @staticmethod
    def _postfix(row: dict) -> str:
        parts = []
        for key, label, fmt in _SHOWN:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                parts.append(f"{label}={value:{fmt}}")
        if row.get("collapse"):
            parts.append("COLLAPSE")
        return ", ".join(parts)


def _has_field(config: type, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(config))


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
