import logging

import pytest
import torch

from metricssl import losses, miners
from metricssl.trainers import MetricLossOnly
from metricssl.utils import common_functions as c_f
from tests.trainer_parity import assert_same_training, labelled_data, make_models, run_trainer


@pytest.mark.parametrize("with_miner", [False, True])
def test_matches_pml_losses_weights_and_hooks(with_miner):
    models = make_models({"trunk": (8, 6), "embedder": (6, 4)})

    def loss_funcs(lib):
        return {"metric_loss": lib.losses.TripletMarginLoss(margin=0.2)}

    def mining_funcs(lib):
        return {"tuple_miner": lib.miners.MultiSimilarityMiner(epsilon=0.1)}

    runs = [
        run_trainer(
            lib,
            "MetricLossOnly",
            models,
            loss_funcs,
            labelled_data(),
            mining_funcs=mining_funcs if with_miner else None,
            iterations_per_epoch=5,  # more than the loader's 3 batches: the iterator restarts
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    trainer, records, calls = runs[0]
    # PML's order: every iteration hook of an epoch, then the epoch hook.
    assert calls == [("iteration", e, i) for i in range(5) for e in [1]] + [("epoch", 1)] + [
        ("iteration", 2, i) for i in range(5)
    ] + [("epoch", 2)]
    assert records[-1]["global_iteration"] == 9
    # After train() the losses are zeroed (PML zeroes them at the end of each epoch).
    assert trainer.losses == {"metric_loss": 0, "total_loss": 0}


def test_loss_weights_scale_the_total_and_a_zero_weight_skips_the_loss():
    models = make_models({"trunk": (8, 4)})
    runs = [
        run_trainer(
            lib,
            "MetricLossOnly",
            models,
            lambda L: {"metric_loss": L.losses.ContrastiveLoss()},
            labelled_data(),
            loss_weights={"metric_loss": 0.5},
            num_epochs=1,
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    assert runs[0][1][0]["weights"]["metric_loss"] == 0.5
    losses_ = runs[0][1][0]["losses"]
    assert losses_["total_loss"] == pytest.approx(losses_["metric_loss"])


def test_end_of_epoch_hook_returning_false_stops_training():
    models = make_models({"trunk": (8, 4)})
    trunk = models["trunk"]
    epochs = []
    trainer = MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        batch_size=16,
        loss_funcs={"metric_loss": losses.ContrastiveLoss()},
        dataset=labelled_data(),
        dataloader_num_workers=0,
        data_device="cpu",
        end_of_epoch_hook=lambda t: epochs.append(t.epoch) or False,
    )
    trainer.train(num_epochs=5)
    assert epochs == [1]


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_schedulers_step_by_iteration_and_by_epoch():
    models = make_models({"trunk": (8, 4)})
    trunk = models["trunk"]
    opt = torch.optim.SGD(trunk.parameters(), lr=1.0)
    by_iteration = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    by_epoch = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    trainer = MetricLossOnly(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": opt},
        batch_size=16,
        loss_funcs={"metric_loss": losses.ContrastiveLoss()},
        dataset=labelled_data(),
        dataloader_num_workers=0,
        data_device="cpu",
        lr_schedulers={
            "trunk_scheduler_by_iteration": by_iteration,
            "embedder_scheduler_by_epoch": by_epoch,
        },
    )
    trainer.train(num_epochs=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5**6)  # 3 iterations x 2 epochs
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.25)


def test_subset_batch_miner_and_freeze_these_match_pml():
    models = make_models({"trunk": (8, 6), "embedder": (6, 4)})
    runs = [
        run_trainer(
            lib,
            "MetricLossOnly",
            models,
            lambda L: {"metric_loss": L.losses.ContrastiveLoss()},
            labelled_data(n=64),
            mining_funcs=lambda L: {"tuple_miner": L.miners.PairMarginMiner()},
            freeze_these=("embedder",),
            num_epochs=1,
        )
        for lib in ("ours", "pml")
    ]
    assert_same_training(*runs)
    embedder = runs[0][0].models["embedder"]
    assert not embedder.training and not any(p.requires_grad for p in embedder.parameters())
    torch.testing.assert_close(embedder.weight, models["embedder"].weight)


def test_bad_keys_raise_like_pml_with_a_clear_message(caplog):
    trunk = torch.nn.Linear(8, 4)
    base = dict(
        optimizers={},
        batch_size=16,
        loss_funcs={"metric_loss": losses.ContrastiveLoss()},
        dataset=labelled_data(),
    )
    with pytest.raises(AssertionError, match="models must contain"):
        MetricLossOnly(models={"embedder": trunk}, **base)
    with pytest.raises(ValueError, match="loss_funcs keys must be one of"):
        MetricLossOnly(models={"trunk": trunk}, **{**base, "loss_funcs": {"oops": None}})
    with pytest.raises(ValueError, match="freeze_these"):
        MetricLossOnly(models={"trunk": trunk}, freeze_these=("head",), **base)
    with pytest.raises(TypeError, match="models"):
        MetricLossOnly(models=[trunk], **base)
    # The logger is PML's by name ("PML"), whose level other test modules lower: set it here.
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        MetricLossOnly(
            models={"trunk": trunk},
            mining_funcs={"tuple_miner": miners.PairMarginMiner()},
            **base,
        )
    assert "optimizers is empty" in caplog.text
