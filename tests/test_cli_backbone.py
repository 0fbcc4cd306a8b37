"""``metricssl train --backbone SPEC`` (issue 21 item 1): a user's module by
``package.module:attr`` (also from the current folder), timm through a stand-in; the
checkpoint rebuilds the backbone by its spec in ``export``; bad specs exit 2 in one line."""

import json
import sys
import textwrap

import pytest
import torch

from metricssl.cli import main
from metricssl.export import load_encoder
from metricssl.ssl import load_checkpoint
from metricssl.ssl.checkpoint import CheckpointError
from metricssl.ssl.registry import BACKBONES
from tests import zoo_nets

TINY_TRAIN = ["--epochs", "1", "--batch-size", "64", "--steps-per-epoch", "2", "--device", "cpu"]
TRAIN = ["train", "--method", "simclr", "--dataset", "digits", "--json", *TINY_TRAIN]

pytestmark = pytest.mark.filterwarnings("ignore::metricssl.ssl.monitor.CollapseWarning")


def train(out, *flags) -> str:
    assert main([*TRAIN, "--out", str(out), *flags]) == 0
    return str(out / "checkpoints" / "last.pt")


def test_a_module_spec_trains_and_its_export_rebuilds_it(tmp_path, capsys, monkeypatch):
    checkpoint = train(
        tmp_path, "--backbone", "tests.zoo_nets:TinyNet", "--set", "backbone_kwargs.width=6"
    )
    capsys.readouterr()
    method, _ = load_checkpoint(checkpoint)
    out = tmp_path / "encoder.safetensors"
    assert main(["export", "--checkpoint", checkpoint, "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [1, 8, 8]
    encoder = load_encoder(out)
    assert isinstance(encoder.backbone, zoo_nets.TinyNet)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    expected = method.backbone(method.preprocess(images.float() / 255))
    torch.testing.assert_close(encoder(images), expected)
    monkeypatch.setitem(sys.modules, "tests.zoo_nets", None)  # the module is gone
    with pytest.raises(CheckpointError, match="cannot rebuild the backbone.*cannot import module"):
        load_encoder(out)


def test_a_module_in_the_current_folder(tmp_path, monkeypatch):
    # As under `python -m`: the console script's sys.path lacks the folder it runs in.
    (tmp_path / "my_nets_for_cli.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def net(in_channels):
                return nn.Sequential(nn.Conv2d(in_channels, 5, 3), nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten())
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "my_nets_for_cli", raising=False)
    checkpoint = train(tmp_path / "run", "--backbone", "my_nets_for_cli:net")
    assert load_checkpoint(checkpoint)[0].feature_dim == 5


def test_a_timm_model_by_name(tmp_path, monkeypatch):
    timm = zoo_nets.fake_timm()
    monkeypatch.setitem(sys.modules, "timm", timm)
    checkpoint = train(tmp_path, "--backbone", "timm:fake_cnn")
    assert timm.calls[0] == {
        "name": "fake_cnn",
        "pretrained": False,
        "num_classes": 0,
        "in_chans": 1,
    }
    method, meta = load_checkpoint(checkpoint)  # rebuilt through timm.create_model again
    assert meta["config"]["build"]["backbone"] == "timm:fake_cnn" and len(timm.calls) == 2


def test_the_registered_names_are_offered_and_accepted():
    from metricssl.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    backbone = next(a for a in train._actions if a.dest == "backbone")
    for name in BACKBONES:
        assert name in backbone.metavar and backbone.type(name) == name
    assert backbone.type("timm:resnet18") == "timm:resnet18"  # the form only: timm unneeded


@pytest.mark.parametrize("spec", ["resnet19", "nets:", "torchvision:a:b"])
def test_a_bad_backbone_is_a_usage_error(tmp_path, capsys, spec):
    with pytest.raises(SystemExit) as exc:
        main([*TRAIN, "--out", str(tmp_path), "--backbone", spec])
    assert exc.value.code == 2
    assert "--backbone" in capsys.readouterr().err


def test_a_missing_package_or_module_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    assert main([*TRAIN, "--out", str(tmp_path / "a"), "--backbone", "timm:resnet18"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'metricssl[timm]'" in err and err.count("\n") == 1
    assert main([*TRAIN, "--out", str(tmp_path / "b"), "--backbone", "tests.zoo_nets:Nope"]) == 2
    assert "has no attribute 'Nope'" in capsys.readouterr().err
