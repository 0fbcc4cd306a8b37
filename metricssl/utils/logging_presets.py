"""PML's logging presets (``pytorch_metric_learning.utils.logging_presets``): ready-made hooks
for :mod:`metricssl.trainers` and :mod:`metricssl.testers` that record losses, accuracies and
settings with `record-keeper <https://pypi.org/project/record-keeper/>`_, save models, keep the
best epoch and stop early.

``pip install metricssl[record-keeper]`` (record-keeper; ``get_record_keeper`` also needs
tensorboard, as PML's). Without them ``get_record_keeper`` logs why and returns
``(None, None, None)``, and ``get_hook_container(None)`` an :class:`EmptyContainer`.

Example:
    >>> from metricssl.utils import logging_presets
    >>> hooks = logging_presets.get_hook_container(None)  # no record keeper: hooks that do nothing
    >>> hooks.end_of_iteration_hook is None, hooks.end_of_epoch_hook() is None
    (True, True)
"""

from __future__ import annotations

import os
import sqlite3

import torch

from . import common_functions as c_f

# The trainer attributes saved and loaded as dictionaries of modules.
_SAVEABLE = ["models", "optimizers", "lr_schedulers", "loss_funcs", "mining_funcs"]


class HookContainer:
    """Hooks that record a trainer's and a tester's state in a ``record_keeper.RecordKeeper``.

    - ``end_of_iteration_hook(trainer)``: every ``log_freq`` iterations, records the losses
      (group ``"loss_histories"``), loss weights (``"loss_weights"``), the recordable
      attributes of loss functions, miners and models, and each optimizer's learning rate.
    - ``end_of_epoch_hook(tester, dataset_dict, model_folder, ...)`` returns a hook that, every
      ``test_interval`` epochs, tests, records, steps plateau schedulers, saves the latest and
      the best models, and returns False (stop training) after ``patience`` epochs without a
      new best ``primary_metric`` on the ``validation_split_name`` split.
    - ``end_of_testing_hook(tester)``: records the accuracies, the best epoch and accuracy.

    Args:
        record_keeper: a ``record_keeper.RecordKeeper``.
        record_group_name_prefix: prefix of the accuracy groups' names.
        primary_metric: the accuracy that picks the best epoch.
        validation_split_name: the split whose accuracy picks the best epoch.
        save_models: save the models (else only records).
        log_freq: iterations between two loss records.
    """

    def __init__(
        self,
        record_keeper,
        record_group_name_prefix=None,
        primary_metric="mean_average_precision_at_r",
        validation_split_name="val",
        save_models=True,
        log_freq=50,
    ):
        if isinstance(log_freq, bool) or not isinstance(log_freq, int) or log_freq < 1:
            raise ValueError(f"log_freq must be a positive int, got {log_freq!r}")
        self.record_keeper = record_keeper
        self.record_group_name_prefix = record_group_name_prefix
        self.saveable_trainer_objects = list(_SAVEABLE)
        self.primary_metric = primary_metric
        self.validation_split_name = validation_split_name
        self.do_save_models = save_models
        self.log_freq = log_freq

    # -- hooks -------------------------------------------------------------------------------

    def end_of_iteration_hook(self, trainer):
        if trainer.iteration % self.log_freq != 0:
            return
        iteration = trainer.get_global_iteration()
        records = [
            (trainer.loss_tracker.losses, {"parent_name": "loss_histories"}),
            (trainer.loss_tracker.loss_weights, {"parent_name": "loss_weights"}),
            (trainer.loss_funcs, {"recursive_types": [torch.nn.Module, dict]}),
            (trainer.mining_funcs, {}),
            (trainer.models, {}),
            (trainer.optimizers, {"custom_attr_func": self.optimizer_custom_attr_func}),
        ]
        for record, kwargs in records:
            self.record_keeper.update_records(record, iteration, **kwargs)

    def end_of_epoch_hook(
        self,
        tester,
        dataset_dict,
        model_folder,
        test_interval=1,
        patience=None,
        splits_to_eval=None,
        test_collate_fn=None,
    ):
        """The trainer's ``end_of_epoch_hook``: test, record, save, and maybe stop."""
        metrics = tester.accuracy_calculator.get_curr_metrics()
        if self.primary_metric not in metrics:
            raise ValueError(f"HookContainer `primary_metric` must be one of: {metrics}")
        os.makedirs(model_folder, exist_ok=True)

        def actual_hook(trainer):
            if trainer.epoch % test_interval != 0:
                return True
            best_epoch = self.save_models_and_eval(
                trainer,
                dataset_dict,
                model_folder,
                test_interval,
                tester,
                splits_to_eval,
                test_collate_fn,
            )
            return self.patience_remaining(trainer.epoch, best_epoch, patience)

        return actual_hook

    def end_of_testing_hook(self, tester):
        for split_name, accuracies in tester.all_accuracies.items():
            epoch = accuracies["epoch"]
            group = self.record_group_name(tester, split_name)
            self.record_keeper.update_records(accuracies, epoch, parent_name=group)
            _, _, best_epoch, best_accuracy = self.is_new_best_accuracy(tester, split_name, epoch)
            best = {"best_epoch": best_epoch, "best_accuracy": best_accuracy}
            self.record_keeper.update_records(best, epoch, parent_name=group)

    # -- saving and loading ------------------------------------------------------------------

    def _saveable(self, trainer):
        return [getattr(trainer, name, {}) for name in self.saveable_trainer_objects]

    def load_latest_saved_models(self, trainer, model_folder, device=None, best=False):
        """Load the newest (or best) saved models; returns the epoch to resume from."""
        if device is None:
            device = c_f.use_cuda_if_available()
        resume_epoch, suffix = c_f.latest_version(model_folder, "trunk_*.pth", best=best)
        if resume_epoch > 0:
            for objects in self._saveable(trainer):
                c_f.load_dict_of_models(
                    objects, suffix, model_folder, device, log_if_successful=True
                )
        return resume_epoch + 1

    def save_models(self, trainer, model_folder, curr_suffix, prev_suffix=None):
        if not self.do_save_models:
            return
        for objects in self._saveable(trainer):
            c_f.save_dict_of_models(objects, curr_suffix, model_folder)
            if prev_suffix is not None:
                c_f.delete_dict_of_models(objects, prev_suffix, model_folder)

    def save_models_and_eval(
        self,
        trainer,
        dataset_dict,
        model_folder,
        test_interval,
        tester,
        splits_to_eval=None,
        collate_fn=None,
    ):
        epoch = trainer.epoch
        tester.test(
            dataset_dict,
            epoch,
            trainer.models["trunk"],
            trainer.models["embedder"],
            splits_to_eval,
            collate_fn,
        )
        prev_best_epoch, _ = self.get_best_epoch_and_accuracy(tester, self.validation_split_name)
        is_new_best, curr_accuracy, best_epoch, _ = self.is_new_best_accuracy(
            tester, self.validation_split_name, epoch
        )
        self.record_keeper.save_records()
        trainer.step_lr_plateau_schedulers(curr_accuracy)
        self.save_models(trainer, model_folder, epoch, epoch - test_interval)  # the latest
        if is_new_best:
            c_f.LOGGER.info(f"New best accuracy! {curr_accuracy}")
            prev_suffix = None if prev_best_epoch is None else f"best{prev_best_epoch}"
            self.save_models(trainer, model_folder, f"best{best_epoch}", prev_suffix)
        return best_epoch

    def is_new_best_accuracy(self, tester, split_name, epoch):
        curr_accuracy = self.get_curr_primary_metric(tester, split_name)
        best_epoch, best_accuracy = self.get_best_epoch_and_accuracy(tester, split_name)
        is_new_best = best_epoch is None or curr_accuracy > best_accuracy
        if is_new_best:
            best_epoch, best_accuracy = epoch, curr_accuracy
        return is_new_best, curr_accuracy, best_epoch, best_accuracy

    # -- reading the records -----------------------------------------------------------------

    def get_loss_history(self, loss_names=()):
        table = "loss_histories"
        if not self.record_keeper.table_exists(table):
            return {}
        columns = "*" if len(loss_names) == 0 else ", ".join(loss_names)
        output = self.record_keeper.query(f"SELECT {columns} FROM {table}", return_dict=True)
        output.pop("id", None)
        return output

    def get_accuracy_history(self, tester, split_name, return_all_metrics=False, metrics=()):
        table = self.record_group_name(tester, split_name)
        if not self.record_keeper.table_exists(table):
            return {}

        def get_accuracies(keys):
            columns = "*" if return_all_metrics else f"epoch, {keys}"
            return self.record_keeper.query(f"SELECT {columns} FROM {table}", return_dict=True)

        keys = metrics if len(metrics) > 0 else [self.primary_metric]
        output = self.try_keys(keys, tester, get_accuracies)
        output.pop("id", None)
        return output

    def get_curr_primary_metric(self, tester, split_name):
        return self.try_primary_metric(tester, lambda key: tester.all_accuracies[split_name][key])

    def try_keys(self, input_keys, tester, input_func):
        """``input_func`` of the accuracy column names, averaged over levels first."""
        for average in (True, False):
            keys = ", ".join(
                tester.accuracies_keyname(
                    k, average=average, label_hierarchy_level=tester.label_hierarchy_level
                )
                for k in input_keys
            )
            try:
                return input_func(keys)
            except (KeyError, sqlite3.OperationalError):
                pass
        raise KeyError(f"no accuracy named {list(input_keys)} in the records")

    def try_primary_metric(self, tester, input_func):
        return self.try_keys([self.primary_metric], tester, input_func)

    def get_accuracies_of_epoch(self, tester, split_name, epoch, select_all=True):
        """The recorded accuracies of ``epoch`` (a list of rows; empty when none)."""
        table = self.record_group_name(tester, split_name)
        if not self.record_keeper.table_exists(table):
            return []

        def get_accuracies(key):
            columns = "*" if select_all else f"epoch, {key}"
            query = f"SELECT {columns} FROM {table} WHERE epoch=?"
            return self.record_keeper.query(query, (epoch,))

        return self.try_primary_metric(tester, get_accuracies)

    def get_accuracies_of_best_epoch(self, tester, split_name, select_all=True, ignore_epoch=(-1,)):
        """``(rows of the best epoch, the column that ranks them)``; ``([], None)`` if none."""
        table = self.record_group_name(tester, split_name)
        if not self.record_keeper.table_exists(table):
            return [], None

        def get_accuracies(key):
            columns = "*" if select_all else f"epoch, {key}"
            params = ", ".join(["?"] * len(ignore_epoch))
            query = (
                f"SELECT {columns} FROM {table} WHERE {key}="
                f"(SELECT max({key}) FROM {table} WHERE epoch NOT IN ({params})) "
                f"AND epoch NOT IN ({params})"
            )
            return self.record_keeper.query(query, ignore_epoch + ignore_epoch), key

        return self.try_primary_metric(tester, get_accuracies)

    def get_best_epoch_and_accuracy(self, tester, split_name, ignore_epoch=(-1,)):
        accuracies, key = self.get_accuracies_of_best_epoch(
            tester, split_name, select_all=False, ignore_epoch=ignore_epoch
        )
        if len(accuracies) > 0:
            return accuracies[0]["epoch"], accuracies[0][key]
        return None, 0

    def patience_remaining(self, epoch, best_epoch, patience):
        if patience is not None and best_epoch is not None and epoch - best_epoch > patience:
            c_f.LOGGER.info("Validation accuracy has plateaued. Exiting.")
            return False
        return True

    def run_tester_separately(
        self,
        tester,
        dataset_dict,
        epoch,
        trunk,
        embedder,
        splits_to_eval=None,
        collate_fn=None,
        skip_eval_if_already_done=True,
    ):
        """Test outside training; skips splits already recorded for ``epoch``. Returns
        whether a test ran."""
        if skip_eval_if_already_done:
            splits_to_eval = self.get_splits_to_eval(tester, dataset_dict, epoch, splits_to_eval)
            if len(splits_to_eval) == 0:
                c_f.LOGGER.info("Already evaluated")
                return False
        tester.test(dataset_dict, epoch, trunk, embedder, splits_to_eval, collate_fn)
        return True

    def get_splits_to_eval(self, tester, dataset_dict, epoch, input_splits_to_eval):
        splits = list(dataset_dict) if input_splits_to_eval is None else input_splits_to_eval
        return [s for s in splits if len(self.get_accuracies_of_epoch(tester, s, epoch)) == 0]

    # -- names -------------------------------------------------------------------------------

    def base_record_group_name(self, tester):
        prefix = f"{self.record_group_name_prefix}_" if self.record_group_name_prefix else ""
        return prefix + tester.description_suffixes("accuracies")

    def record_group_name(self, tester, split_name):
        """``<base>_<QUERY>_vs_<REFERENCES or self>`` (record-keeper's short name if hashed)."""
        query_label = split_name.upper()
        references = sorted(tester.reference_split_names[split_name])
        reference_label = "_and_".join(name.upper() for name in references)
        if reference_label == query_label:
            reference_label = "self"
        name = f"{self.base_record_group_name(tester)}_{query_label}_vs_{reference_label}"
        # record-keeper shortens long table names; look the short one up.
        for short, full in self.record_keeper.hash_map.items():
            if full == name:
                return short
        return name

    def optimizer_custom_attr_func(self, optimizer):
        return {"lr": optimizer.param_groups[0]["lr"]}


class EmptyContainer:
    """The hooks when there is no record keeper: nothing is recorded or saved."""

    def end_of_epoch_hook(self, *args):
        return None

    end_of_iteration_hook = None
    end_of_testing_hook = None


def get_record_keeper(
    csv_folder,
    tensorboard_folder=None,
    global_db_path=None,
    experiment_name=None,
    is_new_experiment=True,
    save_lists=False,
):
    """``(record_keeper, record_writer, tensorboard_writer)``, as PML's: needs record-keeper
    and tensorboard; without them, warnings on the logger and ``(None, None, None)``."""
    try:
        import record_keeper as record_keeper_package
        from torch.utils.tensorboard import SummaryWriter
    except ModuleNotFoundError as err:
        c_f.LOGGER.warning(err)
        c_f.LOGGER.warning("There won't be any logging or model saving.")
        c_f.LOGGER.warning("To fix this, pip install record-keeper tensorboard")
        return None, None, None
    record_writer = record_keeper_package.RecordWriter(
        folder=csv_folder,
        global_db_path=global_db_path,
        experiment_name=experiment_name,
        is_new_experiment=is_new_experiment,
        save_lists=save_lists,
    )
    tensorboard_writer = (
        SummaryWriter(log_dir=tensorboard_folder) if tensorboard_folder is not None else None
    )
    record_keeper = record_keeper_package.RecordKeeper(
        tensorboard_writer=tensorboard_writer,
        record_writer=record_writer,
        attributes_to_search_for=c_f.list_of_recordable_attributes_list_names(),
    )
    return record_keeper, record_writer, tensorboard_writer


def get_hook_container(record_keeper, **kwargs):
    """A :class:`HookContainer` over ``record_keeper``, or an :class:`EmptyContainer` (with a
    warning) when it is None."""
    if record_keeper:
        return HookContainer(record_keeper, **kwargs)
    c_f.LOGGER.warning("No record_keeper, so no preset hooks are being returned.")
    return EmptyContainer()
