"""Backbones from a spec (issue 21 item 1): timm and torchvision through stand-ins that
follow their APIs (the real packages cannot be installed next to this CPU build of torch),
a user's module by ``module:attr``, the errors, and the spec kept by a Trainer checkpoint."""

import sys

import pytest
import torch
from torch import nn

from metricssl.models.zoo import (
    BackboneImportError,
    BackboneSpec,
    adapt_input_weight,
    build_from_spec,
    parse_backbone_spec,
)
from metricssl.ssl.checkpoint import CheckpointError, load_checkpoint
from metricssl.ssl.registry import build_backbone, build_method, check_backbone
from tests import zoo_nets
from tests.ssl.tiny_runs import tiny_images, tiny_trainer

# -- stand-ins for timm and torchvision (tests/zoo_nets.py) ---------------------------------


@pytest.fixture
def timm(monkeypatch):
    module = zoo_nets.fake_timm()
    monkeypatch.setitem(sys.modules, "timm", module)
    return module


@pytest.fixture
def torchvision(monkeypatch):
    package = zoo_nets.fake_torchvision()
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", package.models)
    return package.models


def features(net, shape, n=3):
    return net.eval()(torch.rand(n, *shape))


# -- parsing ------------------------------------------------------------------------------------


def test_specs_parse_into_their_parts():
    assert parse_backbone_spec("timm:resnet18") == BackboneSpec("timm", "timm", "resnet18")
    assert parse_backbone_spec("torchvision:vit_b_16").kind == "torchvision"
    assert parse_backbone_spec("timm:hf-hub:org/model").name == "hf-hub:org/model"
    assert parse_backbone_spec("my_pkg.nets:Zoo.Net") == BackboneSpec(
        "module", "my_pkg.nets", "Zoo.Net"
    )


@pytest.mark.parametrize(
    "spec", ["nets:", ":Net", "my nets:Net", "nets:Net:x", "torchvision:a:b", "nets:1Net"]
)
def test_a_malformed_spec_names_the_forms(spec):
    with pytest.raises(ValueError, match="timm:NAME"):
        parse_backbone_spec(spec)
    with pytest.raises(ValueError, match="timm:NAME"):
        check_backbone(spec)


def test_check_backbone_refuses_unknown_names_and_other_types():
    check_backbone("resnet18")
    check_backbone("tests.zoo_nets:TinyNet")
    check_backbone(nn.Identity())
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*package.module:attr"):
        check_backbone("resnet19")
    with pytest.raises(TypeError, match="backbone must be"):
        check_backbone(3)


# -- timm -----------------------------------------------------------------------------------


def test_timm_model_without_classifier_for_the_data_channels(timm):
    net = build_backbone("timm:fake_cnn", (1, 12, 12))
    assert timm.calls == [
        {"name": "fake_cnn", "pretrained": False, "num_classes": 0, "in_chans": 1}
    ]
    assert features(net, (1, 12, 12)).shape == (3, 8)
    build_backbone("timm:fake_cnn", (1, 12, 12), pretrained=True, drop_rate=0.1)
    assert timm.calls[-1]["pretrained"] is True and timm.calls[-1]["drop_rate"] == 0.1


def test_timm_pre_logits_width_is_the_output_width(timm):
    # num_features says 8, the model returns its 12 pre-logits features: the output counts.
    method = build_method("simclr", (3, 8, 8), backbone="timm:fake_mobilenet")
    assert method.backbone.num_features == 12 and method.feature_dim == 12
    assert features(method.backbone, (3, 8, 8)).shape == (3, 12)


def test_timm_input_size_through_backbone_kwargs(timm):
    with pytest.raises(
        ValueError, match=r"(?s)fails on images of shape \(2, 3, 32, 32\).*img_size"
    ):
        build_from_spec("timm:fake_vit", (3, 32, 32))
    assert features(build_from_spec("timm:fake_vit", (3, 32, 32), img_size=32), (3, 32, 32)).shape
    with pytest.raises(ValueError, match=r"backbone_kwargs\['num_classes'\]"):
        build_from_spec("timm:fake_cnn", (3, 8, 8), num_classes=10)


def test_unknown_timm_model_suggests_close_names(timm):
    with pytest.raises(ValueError, match=r"timm has no model 'fake_cnm'.*'fake_cnn'"):
        build_from_spec("timm:fake_cnm", (3, 8, 8))


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_missing_package_names_the_extra(monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(BackboneImportError, match=rf"pip install 'metricssl\[{package}\]'") as err:
        build_backbone(f"{package}:resnet18", (3, 8, 8))
    assert isinstance(err.value, ImportError) and isinstance(err.value, ValueError)


# -- torchvision ----------------------------------------------------------------------------


def test_torchvision_classifier_removed_and_first_conv_for_one_channel(torchvision):
    torch.manual_seed(0)
    original = zoo_nets.fake_resnet().conv1.weight.detach()
    torch.manual_seed(0)
    net = build_backbone("torchvision:fake_resnet", (1, 8, 8), weights="DEFAULT")
    assert torchvision.calls == [{"name": "fake_resnet", "weights": "DEFAULT"}]
    assert isinstance(net.fc, nn.Identity)
    assert net.conv1.in_channels == 1 and net.conv1.bias is None
    torch.testing.assert_close(net.conv1.weight, original.sum(dim=1, keepdim=True))
    assert features(net, (1, 8, 8)).shape == (3, 8)


def test_torchvision_three_channels_keep_the_first_conv(torchvision):
    torch.manual_seed(0)
    original = zoo_nets.fake_resnet().conv1.weight.detach()
    torch.manual_seed(0)
    net = build_backbone("torchvision:fake_resnet", (3, 8, 8))
    torch.testing.assert_close(net.conv1.weight, original)


def test_torchvision_last_linear_of_a_classifier_removed(torchvision):
    # VGG-like: the classifier's hidden layer stays, its last Linear goes.
    net = build_backbone("torchvision:fake_vgg", (3, 8, 8))
    assert isinstance(net.classifier[0], nn.Linear) and isinstance(net.classifier[2], nn.Identity)
    assert features(net, (3, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize(
    "name, message",
    [
        ("fake_squeezenet", "classifier has no nn.Linear"),
        ("fake_unet", "no classifier"),
        ("fake_resnt", "torchvision has no model 'fake_resnt'.*'fake_resnet'"),
    ],
)
def test_torchvision_errors(torchvision, name, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(f"torchvision:{name}", (3, 8, 8))


def test_adapted_weight_answers_a_replicated_grey_image_as_before():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    grey = torch.rand(2, 1, 6, 6)
    before = nn.functional.conv2d(grey.expand(-1, 3, -1, -1), weight)
    for channels in (1, 6):  # exact where the channels hold whole copies of the inputs
        adapted = adapt_input_weight(weight, channels)
        assert adapted.shape == (4, channels, 3, 3)
        after = nn.functional.conv2d(grey.expand(-1, channels, -1, -1), adapted)
        torch.testing.assert_close(after, before)
    # Five channels: the three inputs repeated (0, 1, 2, 0, 1) and scaled by 3/5.
    expected = weight[:, [0, 1, 2, 0, 1]] * 3 / 5
    torch.testing.assert_close(adapt_input_weight(weight, 5), expected)


# -- module:attr ----------------------------------------------------------------------------


def test_module_class_gets_in_channels_and_kwargs():
    net = build_backbone("tests.zoo_nets:TinyNet", (1, 8, 8), width=5)
    assert isinstance(net, zoo_nets.TinyNet) and net.in_channels == 1
    assert features(net, (1, 8, 8)).shape == (3, 5)


def test_module_factory_gets_input_shape():
    assert features(build_backbone("tests.zoo_nets:flat_net", (2, 4, 4)), (2, 4, 4)).shape == (
        3,
        6,
    )


def test_module_instance_is_copied():
    first = build_backbone("tests.zoo_nets:TINY", (1, 8, 8))
    second = build_backbone("tests.zoo_nets:TINY", (1, 8, 8))
    assert first is not zoo_nets.TINY and first is not second
    torch.testing.assert_close(first.state_dict(), zoo_nets.TINY.state_dict())
    with pytest.raises(ValueError, match="module instance: backbone_kwargs"):
        build_backbone("tests.zoo_nets:TINY", (1, 8, 8), width=3)


@pytest.mark.parametrize(
    "spec, kwargs, error, message",
    [
        ("tests.zoo_nets:Missing", {}, ValueError, "has no attribute 'Missing'"),
        ("tests.no_such_module:Net", {}, BackboneImportError, "cannot import module"),
        ("tests.zoo_nets:NOT_A_MODULE", {}, TypeError, "is a int, not an nn.Module"),
        ("tests.zoo_nets:returns_a_number", {}, TypeError, "returned a int, not an nn.Module"),
        ("tests.zoo_nets:needs_depth", {}, TypeError, "missing a required argument: 'depth'"),
        ("tests.zoo_nets:TinyNet", {"depth": 2}, TypeError, "cannot be called with"),
        ("tests.zoo_nets:NoPooling", {}, ValueError, r"it returned \(2, 4, 6, 6\)"),
        ("tests.zoo_nets:FixedSize", {}, ValueError, "fails on images of shape"),
        ("tests.zoo_nets:WrongWidth", {}, ValueError, "num_features is 99 but it returns 8"),
    ],
)
def test_module_spec_errors_name_the_spec(spec, kwargs, error, message):
    with pytest.raises(error, match=message) as err:
        build_backbone(spec, (1, 8, 8), **kwargs)
    assert spec in str(err.value)


def test_module_spec_builds_every_method_part():
    method = build_method("byol", (1, 8, 8), backbone="tests.zoo_nets:TinyNet")
    assert isinstance(method.backbone, zoo_nets.TinyNet) and method.feature_dim == 8


# -- through the Trainer and its checkpoint -------------------------------------------------

# Two steps of a tiny network: its representation is not the point.
quiet_collapse = pytest.mark.filterwarnings("ignore::metricssl.ssl.monitor.CollapseWarning")


def train(out, backbone, **kw):
    trainer = tiny_trainer(
        out,
        "simclr",
        dataset=tiny_images(64, (1, 8, 8)),
        backbone=backbone,
        hparams={"proj_hidden_dim": 16, "proj_output_dim": 8},
        epochs=1,
        steps_per_epoch=2,
        **kw,
    )
    trainer.fit()
    return trainer


@quiet_collapse
def test_a_spec_is_stored_and_rebuilt_by_name(tmp_path):
    trainer = train(tmp_path, "tests.zoo_nets:TinyNet", backbone_kwargs={"width": 6})
    # A spec may be the user's code: under "auto" it stays contiguous, as a module would.
    assert trainer.memory_format == torch.contiguous_format
    method, meta = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert meta["config"]["build"]["backbone"] == "tests.zoo_nets:TinyNet"
    assert isinstance(method.backbone, zoo_nets.TinyNet)
    torch.testing.assert_close(method.state_dict(), trainer.method.state_dict())
    resumed = train(tmp_path, "tests.zoo_nets:TinyNet", backbone_kwargs={"width": 6})
    assert resumed.resumed is not None and resumed.epoch == 1


@quiet_collapse
def test_a_module_object_cannot_be_rebuilt_from_its_checkpoint(tmp_path):
    train(tmp_path, zoo_nets.TinyNet(in_channels=1))
    path = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="pass backbone=.*package.module:attr"):
        load_checkpoint(path)
    method, _ = load_checkpoint(path, backbone=zoo_nets.TinyNet(in_channels=1))
    assert isinstance(method.backbone, zoo_nets.TinyNet)
