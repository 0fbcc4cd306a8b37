"""ResNet-18/50: standard parameter counts and layout, stems, shapes, errors."""

import pytest
import torch

from metricssl.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_standard_parameter_counts():
    # torchvision's resnet18 / resnet50 (11,689,512 / 25,557,032) minus the 1000-way fc.
    assert n_params(resnet18()) == 11_689_512 - (512 * 1000 + 1000)
    assert n_params(resnet50()) == 25_557_032 - (2048 * 1000 + 1000)
    # The CIFAR stem swaps the 7x7 conv for a 3x3: 64 * 3 * (49 - 9) fewer weights.
    assert n_params(resnet18(stem="cifar")) == n_params(resnet18()) - 64 * 3 * 40


def test_state_dict_names_follow_torchvision():
    keys = set(resnet50().state_dict())
    for k in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer1.0.conv3.weight",
        "layer4.2.bn3.num_batches_tracked",
    ]:
        assert k in keys
    assert not any(k.startswith("fc.") for k in keys)
    assert "layer1.0.downsample.0.weight" not in resnet18().state_dict()


def test_stems():
    inet, cifar = resnet18(stem="imagenet"), resnet18(stem="cifar")
    assert inet.conv1.kernel_size == (7, 7) and inet.conv1.stride == (2, 2)
    assert isinstance(inet.maxpool, torch.nn.MaxPool2d)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)


@torch.no_grad()
def test_forward_shapes():
    assert resnet18(stem="cifar")(torch.randn(2, 3, 16, 16)).shape == (2, 512)
    gray = resnet18(stem="imagenet", in_channels=1)
    assert gray(torch.randn(2, 1, 40, 40)).shape == (2, 512)
    net = resnet50(stem="cifar").eval()
    assert net(torch.randn(1, 3, 8, 8)).shape == (1, 2048)
    assert net.num_features == 2048


def test_zero_init_residual_makes_blocks_start_as_identity():
    net = ResNet(BasicBlock, (1, 1, 1, 1), stem="cifar", zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in [net.layer1[0], net.layer4[0]])
    block = net.layer1[0].eval()  # no downsample: out = relu(0 + x) = x for x >= 0
    x = torch.rand(2, 64, 8, 8)
    torch.testing.assert_close(block(x), x)
    bottleneck = ResNet(Bottleneck, (1, 1, 1, 1), zero_init_residual=True)
    assert bottleneck.layer2[0].bn3.weight.abs().sum() == 0


def test_gradients_flow():
    net = ResNet(BasicBlock, (1, 1, 1, 1), stem="cifar")
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert net.conv1.weight.grad is not None and torch.isfinite(net.conv1.weight.grad).all()


@pytest.mark.parametrize(
    "kwargs, exc",
    [
        (dict(stem="tiny"), ValueError),
        (dict(in_channels=0), ValueError),
        (dict(zero_init_residual=1), TypeError),
    ],
)
def test_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        resnet18(**kwargs)


def test_bad_layout():
    with pytest.raises(ValueError):
        ResNet(BasicBlock, (2, 2, 2))
    with pytest.raises(ValueError):
        ResNet(BasicBlock, (2, 0, 2, 2))
    with pytest.raises(TypeError):
        ResNet(torch.nn.Conv2d, (2, 2, 2, 2))


def test_bad_input():
    with pytest.raises(ValueError, match="expects images"):
        resnet18()(torch.randn(2, 1, 32, 32))
