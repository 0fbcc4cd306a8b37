"""The registry: one source of every method's defaults (its typed config), checked configs,
and the name lists the command line offers."""

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from metricssl.ssl.method import MethodConfig
from metricssl.ssl.registry import (
    ALIASES,
    BACKBONES,
    METHODS,
    OPTIMIZERS,
    TrainingDefaults,
    build_method,
    cli_choices,
    method_config,
    method_hparams,
    stored_hparams,
)
from metricssl.ssl.trainer import Trainer

# Constructor arguments whose None means "read it from the head the registry builds with the
# config's value" (DINO's output_dim is its DINOHead's width).
FROM_THE_HEAD = {("dino", "output_dim")}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "trainer.md"


def _shared_arguments(name):
    spec = METHODS[name]
    params = inspect.signature(spec.cls.__init__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(spec.config)}
    return {
        arg: (params[arg].default, fields[arg])
        for arg in params
        if arg in fields and (name, arg) not in FROM_THE_HEAD
    }


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_has_its_class_defaults(name):
    spec = METHODS[name]
    assert issubclass(spec.config, MethodConfig)
    for arg, (class_default, config_default) in _shared_arguments(name).items():
        assert class_default == config_default, f"{name}.{arg}"
    # What the Trainer stores and builds with is the config's defaults.
    assert method_hparams(name) == spec.config().as_dict() == spec.hparams
    # Every constructor argument with a default (but the shared SSLMethod ones) is a field.
    params = inspect.signature(spec.cls.__init__).parameters
    common = {"feature_dim", "views", "preprocess", "input_shape"}
    free = [
        p
        for p, v in params.items()
        if v.default is not inspect.Parameter.empty
        and p not in common
        and not p.endswith("_head")
        and p not in {f.name for f in dataclasses.fields(spec.config)}
    ]
    assert not free, f"{name}: constructor defaults outside the config: {free}"


def test_dino_uses_the_papers_teacher_momentum():
    from metricssl.ssl.dino import DINO

    assert METHODS["dino"].hparams["momentum"] == 0.996
    assert inspect.signature(DINO).parameters["momentum"].default == 0.996


def test_a_built_method_carries_the_config_values():
    method = build_method("dino", (1, 16, 16))
    assert method.base_momentum == 0.996 and method.freeze_last_layer_iters == 200
    method = build_method("supervised", (1, 8, 8), num_classes=3)
    assert type(method.miner).__name__ == "MultiSimilarityMiner"
    # A loss with one proxy per class is sized by the data and the embedding head.
    proxy = build_method(
        "supervised", (1, 8, 8), hparams={"loss": "ProxyAnchorLoss"}, num_classes=3
    )
    assert tuple(proxy.loss_fn.proxies.shape) == (3, 128)


def _every_field():
    for name, spec in sorted(METHODS.items()):
        for field in dataclasses.fields(spec.config):
            yield name, field.name


@pytest.mark.parametrize(("name", "field"), list(_every_field()))
def test_a_bad_config_value_is_refused_with_the_fields_name(name, field):
    with pytest.raises((TypeError, ValueError), match=re.escape(field)):
        METHODS[name].config(**{field: "not-a-value"})
    # The same through the Trainer, before any data or model is built.
    with pytest.raises((TypeError, ValueError), match=re.escape(field)):
        Trainer(method=name, dataset="no-such-dataset", hparams={field: "not-a-value"})


@pytest.mark.parametrize(
    ("name", "hparams", "field"),
    [
        ("simclr", {"temperature": 0}, "temperature"),
        ("moco", {"queue_size": 2.5}, "queue_size"),
        ("moco", {"symmetric": 1}, "symmetric"),
        ("byol", {"momentum": 0.99, "final_momentum": 0.9}, "final_momentum"),
        ("dino", {"momentum": 1.5}, "momentum"),
        ("npid", {"bank_init": "zeros"}, "bank_init"),
        ("pirl", {"tile_jitter": -1}, "tile_jitter"),
        ("supervised", {"loss": "NoSuchLoss"}, "loss"),
        ("supervised", {"miner": "NoSuchMiner"}, "miner"),
        ("supervised", {"samples_per_class": 0}, "samples_per_class"),
        ("vae", {"capacity_warmup": 0}, "capacity_warmup"),
    ],
)
def test_config_errors_name_the_field(name, hparams, field):
    with pytest.raises((TypeError, ValueError), match=field):
        method_config(name, hparams)


def test_unknown_hyperparameters_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown hyper-parameter 'temprature'.*temperature"):
        method_config("simclr", {"temprature": 0.1})
    assert method_config("inpainting", {"decoder_width": 8}).decoder_width == 8  # an alias


def test_a_checkpoint_from_before_a_field_existed_matches_todays_defaults():
    # DeepCluster's cluster_batch_size was a constructor argument the registry did not list,
    # so older checkpoints lack it: resuming them must not see a changed model.
    old = {k: v for k, v in method_hparams("deepcluster").items() if k != "cluster_batch_size"}
    assert stored_hparams("deepcluster", old) == method_hparams("deepcluster")


def test_training_defaults_are_written_once():
    # Every method but supervised trains with the shared defaults (lr 2e-3, AdamW, ...).
    shared = [name for name, spec in METHODS.items() if spec.training == TrainingDefaults()]
    assert sorted(shared) == sorted(set(METHODS) - {"supervised", "mae"})
    assert METHODS["supervised"].training.lr == 1e-3
    assert METHODS["mae"].training.weight_decay == 0.05  # the paper's, for a ViT
    with pytest.raises(ValueError, match="optimizer"):
        TrainingDefaults(optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        TrainingDefaults(lr=0)


def test_cli_choices_come_from_the_registry():
    choices = cli_choices()
    assert sorted(choices["method"]) == sorted([*METHODS, *ALIASES])
    assert all(ALIASES[a] in METHODS for a in ALIASES)
    assert choices["backbone"] == BACKBONES and choices["optimizer"] == OPTIMIZERS
    assert {"amp", "memory_format"} <= set(choices)


def test_the_docs_table_of_every_config_is_current():
    # docs/trainer.md lists each method's hyper-parameters with their defaults.
    text = DOCS.read_text()
    for name, spec in METHODS.items():
        section = text.split(f"#### `{name}`", 1)
        assert len(section) == 2, f"docs/trainer.md has no table for {name}"
        table = section[1].split("####", 1)[0]
        for field in dataclasses.fields(spec.config):
            row = f"| `{field.name}` | `{field.default!r}` |"
            assert row in table, f"{name}: {row} not in docs/trainer.md"
