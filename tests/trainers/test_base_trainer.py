"""Key checks and construction of every trainer, as PML's (its test_key_checking, on tensors)."""

import copy
import logging

import pytest
import pytorch_metric_learning as pml
import pytorch_metric_learning.trainers
import torch

import metricssl
import metricssl.trainers
from metricssl.core.validation import ArgumentError
from metricssl.trainers import BaseTrainer
from tests.trainer_parity import labelled_data

TRAINERS = [
    "MetricLossOnly",
    "DeepAdversarialMetricLearning",
    "TrainWithClassifier",
    "TwoStreamMetricLoss",
]


def _kwargs(lib, trainer_name):
    models = {"trunk": torch.nn.Identity()}
    loss_funcs = {"metric_loss": lib.losses.NTXentLoss()}
    if trainer_name == "DeepAdversarialMetricLearning":
        models["generator"] = torch.nn.Identity()
        loss_funcs["synth_loss"] = lib.losses.NTXentLoss()
        loss_funcs["g_adv_loss"] = lib.losses.TripletMarginLoss()
    return {
        "models": models,
        "optimizers": {"trunk_optimizer": None},
        "batch_size": 32,
        "loss_funcs": loss_funcs,
        "mining_funcs": {},
        "dataset": labelled_data(),
        "freeze_these": ["trunk"],
        "lr_schedulers": {"trunk_scheduler_by_iteration": None},
    }


BAD = {
    "models": {},
    "mining_funcs": {"dog": None},
    "loss_funcs": {},
    "freeze_these": ["frog"],
    "lr_schedulers": {"trunk_scheduler": None},
    "gradient_clippers": {"frog_grad_clipper": None},
    "optimizers": {"frog_optimizer": None},
    "loss_weights": {"metric_loss": 1},  # must name every loss
}


@pytest.mark.parametrize("trainer_name", TRAINERS)
@pytest.mark.parametrize("bad", sorted(BAD))
def test_bad_keys_raise_where_pml_raises(trainer_name, bad):
    outcomes = []
    for lib in (metricssl, pml):
        trainer_class = getattr(lib.trainers, trainer_name)
        kwargs = _kwargs(lib, trainer_name)
        trainer_class(**copy.deepcopy(kwargs))  # the good configuration builds
        kwargs[bad] = copy.deepcopy(BAD[bad])
        try:
            trainer_class(**kwargs)
            outcomes.append(None)
        except AssertionError as err:
            outcomes.append(type(err))
    ours, theirs = outcomes
    assert (ours is None) == (theirs is None), (ours, theirs)
    if ours is not None:
        assert issubclass(ours, ArgumentError) and issubclass(ours, ValueError)


def test_warnings_are_logged_like_pml(caplog):
    logs = []
    for lib in (metricssl, pml):
        caplog.clear()
        kwargs = _kwargs(lib, "MetricLossOnly")
        kwargs["models"]["embedder"] = torch.nn.Identity()
        # Each library's own logger (another test may have raised PML's level).
        with caplog.at_level(logging.WARNING, logger=lib.utils.common_functions.LOGGER_NAME):
            lib.trainers.MetricLossOnly(**kwargs)
        logs.append([r.getMessage() for r in caplog.records])
    assert logs[0] == logs[1]
    assert any("freezing its parameters" in m for m in logs[0])
    assert any('optimizers is missing "embedder_optimizer"' in m for m in logs[0])


def test_constructor_defaults_and_arguments_are_pml():
    import inspect

    for name in metricssl.trainers.__all__:
        ours = inspect.signature(getattr(metricssl.trainers, name).__init__)
        theirs = inspect.signature(getattr(pml.trainers, name).__init__)
        assert list(ours.parameters) == list(theirs.parameters), name
        for p in ours.parameters.values():
            assert p.default == theirs.parameters[p.name].default, (name, p.name)


def test_base_trainer_needs_calculate_loss():
    trunk = torch.nn.Linear(8, 4)
    trainer = BaseTrainer(
        models={"trunk": trunk},
        optimizers={"trunk_optimizer": torch.optim.SGD(trunk.parameters(), lr=0.1)},
        batch_size=16,
        loss_funcs={"metric_loss": metricssl.losses.ContrastiveLoss()},
        dataset=labelled_data(),
        dataloader_num_workers=0,
    )
    assert isinstance(trainer.models["embedder"], torch.nn.Identity)
    assert trainer.loss_names == ["metric_loss", "total_loss"]
    assert trainer.loss_weights == {"metric_loss": 1, "total_loss": 1}
    with pytest.raises(NotImplementedError):
        trainer.train()


@pytest.mark.parametrize(
    "argument, error",
    [({"end_of_epoch_hook": 3}, TypeError), ({"iterations_per_epoch": -1}, ValueError)],
)
def test_hooks_and_getters_must_be_callable(argument, error):
    with pytest.raises(error, match=next(iter(argument))):
        BaseTrainer(
            models={"trunk": torch.nn.Identity()},
            optimizers={},
            batch_size=16,
            loss_funcs={},
            dataset=None,
            **argument,
        )
