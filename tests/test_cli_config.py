"""``metricssl train`` settings: config files, --set, precedence, and every Trainer argument
reachable."""

import inspect
import json

import pytest

from metricssl.cli import TRAIN_CLI_ONLY, build_parser
from metricssl.cli_config import (
    parse_set,
    read_config,
    resolve_settings,
    save_resolved,
    trainer_parameters,
)
from metricssl.ssl import Trainer


def test_parameters_are_the_trainers_signature():
    signature = inspect.signature(Trainer.__init__).parameters
    assert list(trainer_parameters()) == [name for name in signature if name != "self"]


def test_every_trainer_argument_is_reachable_from_a_file(tmp_path):
    values = {name: f"value-of-{name}" for name in trainer_parameters()}
    path = tmp_path / "all.json"
    path.write_text(json.dumps(values))
    settings, given = resolve_settings(path, [], {})
    assert given == set(values)
    assert all(settings[name] == f"value-of-{name}" for name in values)


def test_every_train_flag_is_a_trainer_argument():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions if a.dest != "help"}
    assert dests - set(TRAIN_CLI_ONLY) <= set(trainer_parameters())


@pytest.mark.parametrize(
    "name, text",
    [
        ("run.yaml", "method: byol\nepochs: 3\nlr: 1e-3\nhparams:\n  temperature: 0.2\n"),
        ("run.yml", "method: byol\nepochs: 3\nlr: 1.0e-3\nhparams: {temperature: 0.2}\n"),
        ("run.toml", 'method = "byol"\nepochs = 3\nlr = 1e-3\n[hparams]\ntemperature = 0.2\n'),
        (
            "run.json",
            '{"method": "byol", "epochs": 3, "lr": 0.001, "hparams": {"temperature": 0.2}}',
        ),
    ],
)
def test_config_formats_give_the_same_settings(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    settings, given = resolve_settings(path, [], {})
    assert given == {"method", "epochs", "lr", "hparams"}
    assert settings["method"] == "byol" and settings["epochs"] == 3
    # YAML 1.1 reads "1e-3" as a string; the Trainer takes a number there.
    assert settings["lr"] == 0.001 and isinstance(settings["lr"], float)
    assert settings["hparams"] == {"temperature": 0.2}
    assert settings["seed"] == 0  # the Trainer's default


def test_precedence_file_then_set_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nseed: 1\nknn_k: 20\nhparams: {temperature: 0.2, queue_size: 64}\n")
    settings, _ = resolve_settings(
        path, ["seed=2", "knn_k=30", "hparams.temperature=0.5"], {"knn_k": 40}
    )
    assert settings["epochs"] == 3 and settings["seed"] == 2 and settings["knn_k"] == 40
    assert settings["hparams"] == {"temperature": 0.5}  # --set replaces the file's mapping


@pytest.mark.parametrize(
    "items, expected",
    [
        (["knn_k=50"], {"knn_k": 50}),
        (["amp=bf16", "resume=false"], {"amp": "bf16", "resume": False}),
        (
            ["hparams.temperature=0.2", "hparams.loss=TripletMarginLoss"],
            {"hparams": {"temperature": 0.2, "loss": "TripletMarginLoss"}},
        ),
        (['backbone_kwargs={"embedding_dim": 16}'], {"backbone_kwargs": {"embedding_dim": 16}}),
        (["data_dir=null"], {"data_dir": None}),
    ],
)
def test_parse_set(items, expected):
    assert parse_set(items) == expected


@pytest.mark.parametrize(
    "items, message",
    [
        (["knn_k"], "KEY=VALUE"),
        (["=3"], "KEY=VALUE"),
        (["seed.x=3"], "only hparams, backbone_kwargs take dotted keys"),
    ],
)
def test_parse_set_refuses(items, message):
    with pytest.raises(ValueError, match=message):
        parse_set(items)


def test_unknown_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlearning_rate: 0.1\nknn_kk: 5\n")
    with pytest.raises(ValueError) as err:
        resolve_settings(path, [], {})
    message = str(err.value)
    assert f"--config {path}: unknown Trainer arguments" in message
    assert "'learning_rate'" in message and "'knn_kk' (did you mean 'knn_k'?)" in message
    with pytest.raises(ValueError, match="--set: unknown Trainer argument 'epoch' "):
        resolve_settings(None, ["epoch=3"], {})


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("run.yaml", "- 1\n- 2\n", "expected a mapping of Trainer arguments"),
        ("run.yaml", "epochs: [1\n", "not a readable yaml file"),
        ("run.toml", "epochs = \n", "not a readable toml file"),
        ("run.json", "{", "not a readable json file"),
        ("run.ini", "epochs=3", "must be a .yaml, .yml, .toml, .json file"),
    ],
)
def test_bad_config_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        resolve_settings(path, [], {})
    assert message in str(err.value)


def test_a_value_that_is_not_plain_is_refused(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("seed: 2024-01-01\n")
    with pytest.raises(ValueError, match=r"seed = datetime.date\(2024, 1, 1\) \(date\) is not"):
        resolve_settings(path, [], {})


def test_empty_yaml_is_no_settings(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("")
    assert read_config(path) == {}


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config: no file at"):
        read_config(tmp_path / "none.yaml")


def test_saved_settings_read_back_as_a_config(tmp_path):
    settings, _ = resolve_settings(None, ["hparams.temperature=0.3"], {"epochs": 4})
    path = save_resolved(settings, tmp_path / "run")
    assert path == tmp_path / "run" / "resolved.json"
    again, given = resolve_settings(path, [], {})
    assert again == settings and given == set(settings)


def test_yaml_without_pyyaml_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\n")
    with pytest.raises(ValueError, match=r"needs PyYAML: pip install 'metricssl\[config\]'"):
        read_config(path)


def test_a_binary_file_is_not_readable(tmp_path):
    path = tmp_path / "run.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not a readable json file"):
        read_config(path)
