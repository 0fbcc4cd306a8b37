"""ResNet-18 and ResNet-50 feature extractors (no classifier), with CIFAR or ImageNet stems."""

from __future__ import annotations

import torch
from torch import nn

from ..core.validation import check_bool, check_choice, check_number

STEMS = ("cifar", "imagenet")


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as in torchvision's "ResNet v1.5"), 1x1 expand x4."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = _conv1x1(channels, channels * self.expansion)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class ResNet(nn.Module):
    """A residual network that returns the globally pooled feature vector (no ``fc`` layer).

    He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016. The
    layout and initialisation follow the common torchvision implementation (stride in the
    3x3 convolution of bottlenecks; Kaiming-normal convolutions, BatchNorm weight 1 and bias
    0), so parameter counts are the standard ones minus the classifier.

    Stems:
        ``"imagenet"``: 7x7 convolution with stride 2, then 3x3 max-pooling with stride 2
        (for images of roughly 224x224).
        ``"cifar"``: one 3x3 convolution with stride 1 and no max-pooling (for 32x32 images,
        as in the SimCLR CIFAR-10 experiments).

    ``forward(images)`` takes float images ``(N, in_channels, H, W)`` and returns ``(N,
    num_features)``: 512 for BasicBlock networks, 2048 for Bottleneck ones.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks in each of the four stages, e.g. ``(2, 2, 2, 2)``.
        stem: ``"imagenet"`` or ``"cifar"``.
        in_channels: image channels.
        zero_init_residual: start every residual branch's last BatchNorm at zero, so each
            block begins as the identity (Goyal et al., 2017); used by several SSL recipes.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        stem: str = "imagenet",
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if block not in (BasicBlock, Bottleneck):
            raise TypeError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if len(layers) != 4:
            raise ValueError(f"layers must give the blocks of 4 stages, got {layers!r}")
        for i, n in enumerate(layers):
            check_number(f"layers[{i}]", n, low=1, integer=True)
        check_choice("stem", stem, STEMS)
        check_number("in_channels", in_channels, low=1, integer=True)
        check_bool("zero_init_residual", zero_init_residual)
        self.stem_kind = stem
        self.in_channels = in_channels
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = _conv3x3(in_channels, 64)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        width = 64
        stages = []
        for i, (channels, n_blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                blocks.append(block(width, channels, stride if j == 0 else 1))
                width = channels * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNet expects images of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(images.shape)}"
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18(
    stem: str = "imagenet", in_channels: int = 3, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2) without the classifier: 512 features, 11.18 M weights
    with the ImageNet stem. He et al., CVPR 2016.

    Example:
        >>> import torch
        >>> from metricssl.models.resnet import resnet18
        >>> net = resnet18(stem="cifar")
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 512])
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), stem, in_channels, zero_init_residual)


def resnet50(
    stem: str = "imagenet", in_channels: int = 3, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3) without the classifier: 2048 features, 23.51 M weights
    with the ImageNet stem. He et al., CVPR 2016.

    Example:
        >>> from metricssl.models.resnet import resnet50
        >>> resnet50().num_features
        2048
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), stem, in_channels, zero_init_residual)
