"""Small backbones that tests name by spec (``tests.zoo_nets:TinyNet``), as a user names
their own module, and stand-ins for the timm and torchvision packages
(tests/models/test_zoo.py, tests/test_cli_backbone.py)."""

import types

from torch import nn


class TinyNet(nn.Module):
    """A class that takes ``in_channels`` (filled in from the data) and a width."""

    def __init__(self, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.in_channels = in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x):
        return self.net(x)


def flat_net(input_shape, hidden: int = 6):
    """A factory that takes ``input_shape`` (filled in from the data)."""
    channels, height, width = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, hidden))


def needs_depth(depth):
    """A factory with a required argument the data cannot give."""
    return nn.Sequential(*[nn.Identity() for _ in range(depth)], nn.Flatten())


# An instance: each build deep-copies it.
TINY = TinyNet(in_channels=1, width=4)

NOT_A_MODULE = 3


def returns_a_number():
    return 3


class NoPooling(nn.Module):
    """Returns feature maps (N, C, H, W), not features (N, F)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)

    def forward(self, x):
        return self.conv(x)


class FixedSize(nn.Module):
    """Works on 16x16 images only (its Linear fixes the input size)."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.linear = nn.Linear(in_channels * 16 * 16, 5)

    def forward(self, x):
        return self.linear(x.flatten(1))


class WrongWidth(TinyNet):
    """Declares num_features 99 but returns 8 features."""

    num_features = 99


# -- stand-ins for timm and torchvision (their wheels need a CUDA build of torch here) ----


class FakeTimmCNN(nn.Module):
    """As a timm model: ``num_classes=0`` leaves pooled features; ``num_features`` is the
    width before an optional pre-logits layer (``head_hidden``, as MobileNetV3's)."""

    def __init__(
        self, num_classes=1000, in_chans=3, pretrained=False, head_hidden=0, img_size=None, **kw
    ):
        super().__init__()
        self.pretrained, self.img_size, self.options = pretrained, img_size, kw
        self.num_features = 8
        self.stem = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.pre_logits = nn.Linear(8, head_hidden) if head_hidden else nn.Identity()
        width = head_hidden or 8
        self.head = nn.Linear(width, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        if self.img_size is not None:  # timm's ViTs check the size they were built for
            assert x.shape[-1] == self.img_size, f"Input width ({x.shape[-1]}) doesn't match"
        return self.head(self.pre_logits(self.stem(x).mean(dim=(2, 3))))


TIMM_MODELS = {
    "fake_cnn": lambda **kw: FakeTimmCNN(**kw),
    "fake_mobilenet": lambda **kw: FakeTimmCNN(head_hidden=12, **kw),
    "fake_vit": lambda img_size=224, **kw: FakeTimmCNN(img_size=img_size, **kw),
}


def fake_resnet():
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    net.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.fc = nn.Linear(8, 1000)
    net.forward = lambda x: net.fc(net.pool(net.conv1(x)))
    return net


def fake_vgg():
    net = nn.Module()
    net.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    net.classifier = nn.Sequential(nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 1000))
    net.forward = lambda x: net.classifier(net.features(x))
    return net


def fake_squeezenet():  # its classifier is a convolution: nothing Linear to remove
    net = nn.Module()
    net.classifier = nn.Sequential(nn.Conv2d(3, 1000, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.forward = net.classifier
    return net


def fake_unet():  # no classifier at all
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


TORCHVISION_MODELS = {
    "fake_resnet": fake_resnet,
    "fake_vgg": fake_vgg,
    "fake_squeezenet": fake_squeezenet,
    "fake_unet": fake_unet,
}


def fake_timm():
    """A stand-in ``timm`` module: ``create_model`` (recording its calls in ``calls``),
    ``is_model``, ``list_models``."""
    module = types.ModuleType("timm")
    module.calls = []

    def create_model(name, pretrained=False, **kwargs):
        module.calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return TIMM_MODELS[name](pretrained=pretrained, **kwargs)

    module.create_model = create_model
    module.is_model = lambda name: name in TIMM_MODELS
    module.list_models = lambda pattern="*": sorted(TIMM_MODELS)
    return module


def fake_torchvision():
    """A stand-in ``torchvision`` package with ``models.get_model`` (recording its calls in
    ``models.calls``) and ``models.list_models``."""
    package = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    models.calls = []

    def get_model(name, **config):
        models.calls.append({"name": name, **config})
        return TORCHVISION_MODELS[name]()

    models.get_model = get_model
    models.list_models = lambda module=None: sorted(TORCHVISION_MODELS)
    package.models = models
    return package
