"""logging_presets against PML's: the same records, saved models and early stopping."""

import logging
import os

import numpy as np
import pytest
import pytorch_metric_learning as pml
import pytorch_metric_learning.testers
import pytorch_metric_learning.trainers
import torch
from pytorch_metric_learning.utils import logging_presets as pml_logging_presets

import metricssl
import metricssl.testers
import metricssl.trainers
from metricssl.utils import common_functions as c_f
from metricssl.utils import logging_presets
from tests.trainer_parity import labelled_data

record_keeper = pytest.importorskip("record_keeper")


def _train_with_hooks(lib, presets, folder, patience=None, num_epochs=3):
    writer = record_keeper.RecordWriter(folder=os.path.join(folder, "logs"))
    keeper = record_keeper.RecordKeeper(
        record_writer=writer,
        attributes_to_search_for=lib.utils.common_functions.list_of_recordable_attributes_list_names(),
    )
    hooks = presets.get_hook_container(keeper, primary_metric="precision_at_1", log_freq=2)
    calc_module = __import__(f"{lib.__name__}.utils.accuracy_calculator", fromlist=["x"])
    calc_kwargs = {} if lib is metricssl else {"device": torch.device("cpu")}
    tester = lib.testers.GlobalEmbeddingSpaceTester(
        end_of_testing_hook=hooks.end_of_testing_hook,
        accuracy_calculator=calc_module.AccuracyCalculator(
            include=("precision_at_1", "mean_average_precision_at_r"), **calc_kwargs
        ),
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
    )
    datasets = {"train": labelled_data(n=48, seed=1), "val": labelled_data(n=32, seed=2)}
    torch.manual_seed(0)
    trunk = torch.nn.Linear(8, 4)
    models = {"trunk": trunk}
    optimizers = {"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.5)}
    np.random.seed(0)
    trainer = lib.trainers.MetricLossOnly(
        models=models,
        optimizers=optimizers,
        batch_size=16,
        loss_funcs={"metric_loss": lib.losses.TripletMarginLoss(margin=0.5)},
        dataset=datasets["train"],
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        end_of_iteration_hook=hooks.end_of_iteration_hook,
        end_of_epoch_hook=hooks.end_of_epoch_hook(
            tester, datasets, os.path.join(folder, "models"), patience=patience
        ),
    )
    trainer.train(num_epochs=num_epochs)
    return hooks, tester, trainer


def test_records_and_saved_models_match_pml(tmp_path):
    runs = [
        _train_with_hooks(lib, presets, str(tmp_path / name))
        for lib, presets, name in (
            (metricssl, logging_presets, "ours"),
            (pml, pml_logging_presets, "pml"),
        )
    ]
    (ours, our_tester, our_trainer), (theirs, their_tester, _) = runs
    a, b = ours.get_loss_history(), theirs.get_loss_history()
    assert a.keys() == b.keys() and len(a["total_loss"]) == 3 * 2  # iterations 0 and 2
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-6)
    for split in ("train", "val"):
        assert ours.record_group_name(our_tester, split) == theirs.record_group_name(
            their_tester, split
        )
        x = ours.get_accuracy_history(our_tester, split, return_all_metrics=True)
        y = theirs.get_accuracy_history(their_tester, split, return_all_metrics=True)
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_allclose(x[key], y[key], rtol=1e-6)
        assert ours.get_best_epoch_and_accuracy(our_tester, split) == pytest.approx(
            theirs.get_best_epoch_and_accuracy(their_tester, split)
        )
    assert sorted(os.listdir(tmp_path / "ours" / "models")) == sorted(
        os.listdir(tmp_path / "pml" / "models")
    )
    # Resuming loads the latest models and returns the next epoch.
    assert ours.load_latest_saved_models(our_trainer, str(tmp_path / "ours" / "models")) == 4
    assert not ours.run_tester_separately(
        our_tester, {"val": labelled_data(n=32, seed=2)}, 3, our_trainer.models["trunk"], None
    )


def test_patience_stops_training(tmp_path):
    hooks = logging_presets.HookContainer(record_keeper=None)
    assert hooks.patience_remaining(5, 2, patience=3)
    assert not hooks.patience_remaining(6, 2, patience=3)
    assert hooks.patience_remaining(60, 2, patience=None)


def test_primary_metric_must_be_computed(tmp_path):
    hooks = logging_presets.HookContainer(record_keeper=None, primary_metric="NMI")
    tester = metricssl.testers.GlobalEmbeddingSpaceTester(
        accuracy_calculator=metricssl.eval.AccuracyCalculator(include=("precision_at_1",))
    )
    with pytest.raises(ValueError, match="primary_metric"):
        hooks.end_of_epoch_hook(tester, {}, str(tmp_path))


def test_without_a_record_keeper_the_hooks_do_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        hooks = logging_presets.get_hook_container(None)
    assert isinstance(hooks, logging_presets.EmptyContainer)
    assert "No record_keeper" in caplog.text


def test_get_record_keeper_matches_pml(tmp_path, caplog):
    # PML needs tensorboard here too: without it both warn and return Nones.
    try:
        import tensorboard  # noqa: F401

        has_tensorboard = True
    except ImportError:
        has_tensorboard = False
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        ours = logging_presets.get_record_keeper(str(tmp_path / "a"))
        theirs = pml_logging_presets.get_record_keeper(str(tmp_path / "b"))
    assert [x is None for x in ours] == [x is None for x in theirs]
    assert (ours[0] is None) == (not has_tensorboard)
    if not has_tensorboard:
        assert "pip install record-keeper tensorboard" in caplog.text
