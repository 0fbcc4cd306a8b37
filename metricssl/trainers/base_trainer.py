"""``BaseTrainer``: PML's supervised training loop over dictionaries of models and losses."""

from __future__ import annotations

import torch
import tqdm

from ..core.validation import ArgumentError
from ..utils import common_functions as c_f
from ..utils.key_checker import KeyChecker, KeyCheckerDict
from ..utils.loss_tracker import LossTracker

_LR_SCHEDULER_SUFFIXES = {
    "iteration": "_scheduler_by_iteration",
    "epoch": "_scheduler_by_epoch",
    "plateau": "_scheduler_by_plateau",
}


def _as_float(value) -> float:
    # A loss tensor still holds its graph here; detach before reading it for the progress bar.
    return float(value.detach()) if torch.is_tensor(value) else float(value)


class BaseTrainer:
    """Trains ``models`` with ``loss_funcs`` on batches of ``dataset`` (PML's trainer API).

    Each iteration: zero the losses and gradients, :meth:`update_loss_weights`, take a batch
    (optionally reduced by ``mining_funcs["subset_batch_miner"]``), :meth:`calculate_loss`
    (subclasses fill ``self.losses``), weight and sum them into ``losses["total_loss"]``,
    back-propagate, clip gradients, step the optimizers of the models not frozen, then call
    ``end_of_iteration_hook(trainer)`` and step the ``*_scheduler_by_iteration`` schedulers.
    Each epoch ends by stepping the ``*_scheduler_by_epoch`` schedulers and calling
    ``end_of_epoch_hook(trainer)``; training stops when it returns ``False``. The data
    iterator restarts when exhausted, so ``iterations_per_epoch`` may exceed the loader.

    The dictionaries' keys are checked as PML checks them (``models`` must hold ``"trunk"``,
    ``optimizers`` are named ``"<model>_optimizer"``, schedulers ``"<model>_scheduler_by_
    {iteration,epoch,plateau}"``, gradient clippers ``"<model>_grad_clipper"``): a wrong key
    raises :class:`~metricssl.core.validation.ArgumentError` (a ``ValueError`` and an
    ``AssertionError``); a missing optional one is logged as a warning.

    Args:
        models: ``{"trunk": ..., "embedder": ...}`` (the embedder defaults to Identity).
        optimizers: ``{"trunk_optimizer": ..., ...}``.
        batch_size: batch size of the training loader.
        loss_funcs: ``{"metric_loss": ...}`` (subclasses allow more).
        dataset: a map-style dataset returning ``(data, label)`` (see
            ``data_and_label_getter``).
        mining_funcs: ``{"tuple_miner": ..., "subset_batch_miner": ...}``.
        iterations_per_epoch: default: the loader's length.
        data_device: where batches go (default: CUDA if available).
        dtype: dtype batches are cast to (None: unchanged).
        loss_weights: ``{loss name: weight}`` (default 1 each).
        sampler: a sampler, or a ``BatchSampler`` that makes the batches.
        collate_fn: the loader's ``collate_fn``.
        lr_schedulers: learning-rate schedulers by key (see above).
        gradient_clippers: callables run after the backward pass.
        freeze_these: names of models or losses whose parameters are frozen (eval mode).
        freeze_trunk_batchnorm: keep the trunk's BatchNorm layers in eval mode.
        label_hierarchy_level: the label column used when labels have several.
        dataloader_num_workers: workers of the training loader.
        data_and_label_getter: ``f(batch) -> (data, labels)``.
        dataset_labels, set_min_label_to_zero: map labels to 0..C-1 (PML's ``LabelMapper``).
        end_of_iteration_hook: ``f(trainer)`` after every iteration.
        end_of_epoch_hook: ``f(trainer)`` after every epoch; ``False`` stops training.
    """

    def __init__(
        self,
        models,
        optimizers,
        batch_size,
        loss_funcs,
        dataset,
        mining_funcs=None,
        iterations_per_epoch=None,
        data_device=None,
        dtype=None,
        loss_weights=None,
        sampler=None,
        collate_fn=None,
        lr_schedulers=None,
        gradient_clippers=None,
        freeze_these=(),
        freeze_trunk_batchnorm=False,
        label_hierarchy_level=0,
        dataloader_num_workers=2,
        data_and_label_getter=None,
        dataset_labels=None,
        set_min_label_to_zero=False,
        end_of_iteration_hook=None,
        end_of_epoch_hook=None,
    ):
        for name, value in (("models", models), ("optimizers", optimizers)):
            if not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
        for name, value in (
            ("loss_funcs", loss_funcs),
            ("mining_funcs", mining_funcs),
            ("loss_weights", loss_weights),
            ("lr_schedulers", lr_schedulers),
            ("gradient_clippers", gradient_clippers),
        ):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
        if loss_funcs is None:
            raise TypeError("loss_funcs must be a dict, got NoneType")
        if iterations_per_epoch is not None and (
            isinstance(iterations_per_epoch, bool)
            or not isinstance(iterations_per_epoch, int)
            or iterations_per_epoch < 0
        ):
            raise ValueError(
                f"iterations_per_epoch must be a non-negative int or None, got "
                f"{iterations_per_epoch!r}"
            )
        for name, fn in (
            ("data_and_label_getter", data_and_label_getter),
            ("end_of_iteration_hook", end_of_iteration_hook),
            ("end_of_epoch_hook", end_of_epoch_hook),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        self.models = models
        self.optimizers = optimizers
        self.batch_size = batch_size
        self.loss_funcs = loss_funcs
        self.dataset = dataset
        self.mining_funcs = {} if mining_funcs is None else mining_funcs
        self.iterations_per_epoch = iterations_per_epoch
        self.data_device = data_device
        self.dtype = dtype
        self.sampler = sampler
        self.collate_fn = collate_fn
        self.lr_schedulers = lr_schedulers
        self.gradient_clippers = gradient_clippers
        self.freeze_these = freeze_these
        self.freeze_trunk_batchnorm = freeze_trunk_batchnorm
        self.label_hierarchy_level = label_hierarchy_level
        self.dataloader_num_workers = dataloader_num_workers
        self.loss_weights = loss_weights
        self.data_and_label_getter = data_and_label_getter
        self.dataset_labels = dataset_labels
        self.set_min_label_to_zero = set_min_label_to_zero
        self.end_of_iteration_hook = end_of_iteration_hook
        self.end_of_epoch_hook = end_of_epoch_hook
        self.loss_names = list(self.loss_funcs.keys())
        # PML's order: the schema is checked before the embedder default is added.
        self.custom_setup()
        self.verify_dict_keys()
        self.initialize_models()
        self.initialize_data_device()
        self.initialize_label_mapper()
        self.initialize_loss_tracker()
        self.initialize_loss_weights()
        self.initialize_data_and_label_getter()
        self.initialize_hooks()
        self.initialize_lr_schedulers()

    # -- subclass points ---------------------------------------------------------------------

    def custom_setup(self):
        """Runs first in the constructor (before the keys are checked)."""

    def calculate_loss(self, curr_batch):
        """Fill ``self.losses`` from ``curr_batch = (data, labels)`` (subclasses)."""
        raise NotImplementedError

    def update_loss_weights(self):
        """Runs at the start of every iteration (subclasses may change ``loss_weights``)."""

    def modify_schema(self):
        """Change ``self.schema`` (subclasses that accept more keys)."""

    # -- the loop ----------------------------------------------------------------------------

    def train(self, start_epoch=1, num_epochs=1):
        """Train epochs ``start_epoch`` .. ``num_epochs`` (inclusive).

        Example:
            >>> import torch
            >>> from metricssl import losses
            >>> from metricssl.trainers import MetricLossOnly
            >>> data = torch.utils.data.TensorDataset(torch.randn(32, 8), torch.arange(32) % 4)
            >>> trunk = torch.nn.Linear(8, 4)
            >>> trainer = MetricLossOnly(
            ...     models={"trunk": trunk},
            ...     optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
            ...     batch_size=16,
            ...     loss_funcs={"metric_loss": losses.ContrastiveLoss()},
            ...     dataset=data,
            ...     dataloader_num_workers=0,
            ...     data_device="cpu",
            ... )
            >>> trainer.train(num_epochs=2)
            >>> trainer.epoch, trainer.iteration
            (2, 1)
        """
        self.initialize_dataloader()
        for self.epoch in range(start_epoch, num_epochs + 1):
            self.set_to_train()
            c_f.LOGGER.info(f"TRAINING EPOCH {self.epoch}")
            pbar = tqdm.tqdm(range(self.iterations_per_epoch))
            for self.iteration in pbar:
                self.forward_and_backward()
                self.end_of_iteration_hook(self)
                pbar.set_description(f"total_loss={_as_float(self.losses['total_loss']):.5f}")
                self.step_lr_schedulers(end_of_epoch=False)
            self.step_lr_schedulers(end_of_epoch=True)
            self.zero_losses()
            if self.end_of_epoch_hook(self) is False:
                break

    def initialize_dataloader(self):
        c_f.LOGGER.info("Initializing dataloader")
        self.dataloader = c_f.get_train_dataloader(
            self.dataset,
            self.batch_size,
            self.sampler,
            self.dataloader_num_workers,
            self.collate_fn,
        )
        if not self.iterations_per_epoch:
            self.iterations_per_epoch = len(self.dataloader)
        c_f.LOGGER.info("Initializing dataloader iterator")
        self.dataloader_iter = iter(self.dataloader)
        c_f.LOGGER.info("Done creating dataloader iterator")

    def forward_and_backward(self):
        self.zero_losses()
        self.zero_grad()
        self.update_loss_weights()
        self.calculate_loss(self.get_batch())
        self.loss_tracker.update(self.loss_weights)
        self.backward()
        self.clip_gradients()
        self.step_optimizers()

    def zero_losses(self):
        for name in self.losses:
            self.losses[name] = 0

    def zero_grad(self):
        for model in self.models.values():
            model.zero_grad()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad()

    def get_batch(self):
        self.dataloader_iter, batch = c_f.try_next_on_generator(
            self.dataloader_iter, self.dataloader
        )
        data, labels = self.data_and_label_getter(batch)
        labels = c_f.process_label(labels, self.label_hierarchy_level, self.label_mapper)
        return self.maybe_do_batch_mining(data, labels)

    def compute_embeddings(self, data):
        return self.get_final_embeddings(self.get_trunk_output(data))

    def get_final_embeddings(self, base_output):
        return self.models["embedder"](base_output)

    def get_trunk_output(self, data):
        data = c_f.to_device(data, device=self.data_device, dtype=self.dtype)
        return self.models["trunk"](data)

    def maybe_mine_embeddings(self, embeddings, labels):
        if "tuple_miner" in self.mining_funcs:
            return self.mining_funcs["tuple_miner"](embeddings, labels)
        return None

    def maybe_do_batch_mining(self, data, labels):
        if "subset_batch_miner" in self.mining_funcs:
            with torch.no_grad():
                self.set_to_eval()
                embeddings = self.compute_embeddings(data)
                idx = self.mining_funcs["subset_batch_miner"](embeddings, labels)
                self.set_to_train()
                data, labels = data[idx], labels[idx]
        return data, labels

    def backward(self):
        self.losses["total_loss"].backward()

    def get_global_iteration(self):
        return self.iteration + self.iterations_per_epoch * (self.epoch - 1)

    # -- schedulers, optimizers, clipping ----------------------------------------------------

    def step_lr_schedulers(self, end_of_epoch=False):
        suffix = self.allowed_lr_scheduler_key_suffixes["epoch" if end_of_epoch else "iteration"]
        for key, scheduler in self.lr_schedulers.items():
            if key.endswith(suffix):
                scheduler.step()

    def step_lr_plateau_schedulers(self, validation_info):
        suffix = self.allowed_lr_scheduler_key_suffixes["plateau"]
        for key, scheduler in self.lr_schedulers.items():
            if key.endswith(suffix):
                scheduler.step(validation_info)

    def step_optimizers(self):
        for key, optimizer in self.optimizers.items():
            if c_f.regex_replace("_optimizer$", "", key) not in self.freeze_these:
                optimizer.step()

    def clip_gradients(self):
        if self.gradient_clippers is not None:
            for clip in self.gradient_clippers.values():
                clip()

    # -- modes -------------------------------------------------------------------------------

    def maybe_freeze_trunk_batchnorm(self):
        if self.freeze_trunk_batchnorm:
            self.models["trunk"].apply(c_f.set_layers_to_eval("BatchNorm"))

    def trainable_attributes(self):
        return [self.models, self.loss_funcs]

    def set_to_train(self):
        for modules in self.trainable_attributes():
            for key, module in modules.items():
                if key in self.freeze_these:
                    c_f.set_requires_grad(module, requires_grad=False)
                    module.eval()
                else:
                    module.train()
        self.maybe_freeze_trunk_batchnorm()

    def set_to_eval(self):
        for modules in self.trainable_attributes():
            for module in modules.values():
                module.eval()

    # -- initialisation ----------------------------------------------------------------------

    def initialize_data_device(self):
        if self.data_device is None:
            self.data_device = c_f.use_cuda_if_available()

    def initialize_label_mapper(self):
        self.label_mapper = c_f.LabelMapper(self.set_min_label_to_zero, self.dataset_labels).map

    def initialize_loss_tracker(self):
        # LossTracker appends "total_loss" to self.loss_names, as PML's does.
        self.loss_tracker = LossTracker(self.loss_names)
        self.losses = self.loss_tracker.losses

    def initialize_loss_weights(self):
        if self.loss_weights is None:
            self.loss_weights = dict.fromkeys(self.loss_names, 1)

    def initialize_data_and_label_getter(self):
        if self.data_and_label_getter is None:
            self.data_and_label_getter = c_f.return_input

    def initialize_hooks(self):
        if self.end_of_iteration_hook is None:
            self.end_of_iteration_hook = c_f.return_input
        if self.end_of_epoch_hook is None:
            self.end_of_epoch_hook = c_f.return_input

    def initialize_lr_schedulers(self):
        if self.lr_schedulers is None:
            self.lr_schedulers = {}

    def initialize_models(self):
        if "embedder" not in self.models:
            self.models["embedder"] = torch.nn.Identity()

    # -- key checks --------------------------------------------------------------------------

    def verify_dict_keys(self):
        self.allowed_lr_scheduler_key_suffixes = dict(_LR_SCHEDULER_SUFFIXES)
        self.set_schema()
        self.schema.verify(self)
        self.verify_freeze_these_keys()

    def set_schema(self):
        def owners(d):
            return d["models"].keys + d["loss_funcs"].keys

        self.schema = KeyCheckerDict(
            {
                "models": KeyChecker(["trunk", "embedder"], essential=["trunk"]),
                "loss_funcs": KeyChecker(["metric_loss"]),
                "mining_funcs": KeyChecker(
                    ["subset_batch_miner", "tuple_miner"], warn_empty=False, important=[]
                ),
                "loss_weights": KeyChecker(
                    self.loss_names, warn_empty=False, essential=self.loss_names
                ),
                "optimizers": KeyChecker(
                    lambda s, d: c_f.append_map(owners(d), "_optimizer"),
                    important=c_f.append_map(self.models.keys(), "_optimizer"),
                ),
                "lr_schedulers": KeyChecker(
                    lambda s, d: [
                        owner + suffix
                        for suffix in self.allowed_lr_scheduler_key_suffixes.values()
                        for owner in owners(d)
                    ],
                    warn_empty=False,
                    important=[],
                ),
                "gradient_clippers": KeyChecker(
                    lambda s, d: c_f.append_map(owners(d), "_grad_clipper"),
                    warn_empty=False,
                    important=[],
                ),
            }
        )
        self.modify_schema()

    def verify_freeze_these_keys(self):
        allowed = self.schema["models"].keys + self.schema["loss_funcs"].keys
        for key in self.freeze_these:
            if key not in allowed:
                raise ArgumentError(
                    f"freeze_these keys must be one of {', '.join(allowed)} (got {key!r})"
                )
            if key + "_optimizer" in self.optimizers:
                c_f.LOGGER.warning(
                    f"You have passed in an optimizer for {key}, but are freezing its parameters."
                )
