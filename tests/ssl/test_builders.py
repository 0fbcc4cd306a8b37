"""The Trainer's builders, each used alone: model, training settings, optimiser, schedule."""

import pytest
import torch
from torch import nn

from metricssl.ssl.builders import (
    build_model,
    build_optimizer,
    build_schedule,
    training_settings,
)
from metricssl.ssl.datasets import ImageData
from metricssl.ssl.lars import LARS
from metricssl.ssl.method import Batch, SSLMethod
from metricssl.ssl.registry import CUSTOM_TRAINING, METHODS


def data(labels=True, n=40):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return ImageData(images, torch.arange(n) % 4 if labels else None)


class Custom(SSLMethod):
    name = "custom"

    def __init__(self):
        super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), 4)

    def training_step(self, batch: Batch):
        return {"loss": self.backbone(batch.views[0]).pow(2).mean()}


def test_build_model_by_name_records_how_to_rebuild_it():
    model = build_model(
        "simclr", data(), backbone_kwargs={"width": 4}, hparams={"temperature": 0.1}
    )
    assert model.name == "simclr" and model.method.temperature == 0.1
    config = model.build_config
    assert config["hparams"] == {**METHODS["simclr"].hparams, "temperature": 0.1}
    assert config["input_shape"] == [1, 8, 8] and config["num_samples"] == 40
    assert len(config["mean"]) == len(config["std"]) == 1
    assert model.method.input_shape == (1, 8, 8)


def test_build_model_checks_the_method_against_the_data():
    with pytest.raises(ValueError, match="needs labels"):
        build_model("supervised", data(labels=False), backbone_kwargs={"width": 4})
    with pytest.raises(ValueError, match="hparams cannot be applied"):
        build_model(Custom(), data(), hparams={"temperature": 0.1})
    ready = build_model(Custom(), data())
    assert ready.name == "custom" and ready.build_config is None
    with pytest.raises(TypeError, match="cannot be stored in a checkpoint"):
        build_model("simclr", data(), backbone_kwargs={"width": nn.Linear(1, 1)})


def test_training_settings_take_the_methods_defaults_and_what_is_given():
    assert training_settings("supervised") == METHODS["supervised"].training
    settings = training_settings("simclr", lr=0.5, optimizer=None)
    assert (settings.lr, settings.optimizer) == (0.5, METHODS["simclr"].training.optimizer)
    assert training_settings(Custom()) == CUSTOM_TRAINING
    assert training_settings("dae").batch_size == 256  # an alias
    with pytest.raises(ValueError, match="optimizer"):
        training_settings("simclr", optimizer="rmsprop")
    with pytest.raises(ValueError, match="weight_decay"):
        training_settings("simclr", weight_decay=-1)


@pytest.mark.parametrize(
    ("name", "cls", "momentum"),
    [
        ("sgd", torch.optim.SGD, 0.9),
        ("adam", torch.optim.Adam, None),
        ("adamw", torch.optim.AdamW, None),
        ("lars", LARS, 0.9),
    ],
)
def test_build_optimizer(name, cls, momentum):
    method = Custom()
    optimizer = build_optimizer(
        method, training_settings(method, optimizer=name, lr=0.25, weight_decay=0.01)
    )
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.25, 0.01)
    assert group.get("momentum") == momentum


def test_build_schedule_warms_up_then_decays():
    optimizer = build_optimizer(Custom(), training_settings(Custom(), lr=1.0))
    schedule = build_schedule(optimizer, total_steps=4, warmup_steps=10, final_lr_factor=0.0)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    # The warmup is capped at total_steps - 1 = 3 steps, then the cosine reaches 0.
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.0)
