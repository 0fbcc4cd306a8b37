"""A backbone from a spec string: a timm or torchvision model by name, or a module's attribute.

Three forms, each built for the training images' ``input_shape = (C, H, W)``:

- ``timm:NAME``: ``timm.create_model(NAME, num_classes=0, in_chans=C, pretrained=False,
  **kwargs)``: timm's model without its classifier (pooled features), for ``C`` channels
  (``NAME`` may be a hub name, ``timm:hf-hub:ORG/MODEL``).
  ``kwargs`` (``backbone_kwargs``) reach ``create_model``: ``pretrained=True``,
  ``img_size=32`` for a timm ViT, ``drop_path_rate``, ... Needs ``pip install
  'metricssl[timm]'``.
- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, **kwargs)`` (random weights unless
  ``weights="DEFAULT"`` or a weights name is given), with its classifier's last ``nn.Linear``
  replaced by ``nn.Identity`` (the classifier is the model's ``fc``, ``classifier``,
  ``heads`` or ``head``) and its first ``nn.Conv2d`` rebuilt for ``C`` input channels when
  the data has other than 3 (:func:`adapt_input_weight`). Needs ``pip install
  'metricssl[torchvision]'``.
- ``package.module:attr`` (any importable module; ``attr`` may be dotted): an ``nn.Module``
  instance is deep-copied (each build gets its own weights); a class or factory function is
  called with ``kwargs``, plus ``in_channels=C`` and ``input_shape=(C, H, W)`` when its
  signature names them and ``kwargs`` do not set them. The result must be an ``nn.Module``.

Every backbone built here is run once on two zero images and must return features
``(2, F)`` (:func:`~metricssl.models.embedder.probe_num_features`). A spec is a string, so a
checkpoint stores it and rebuilds the backbone on resume, ``load_checkpoint``, ``export``
and ``load_encoder``; a module object passed from Python cannot be rebuilt that way.

timm and torchvision themselves were not run where this module was written (their wheels
need a CUDA build of torch there); their paths are tested with stand-ins that follow
``timm.create_model`` / ``timm.is_model`` / ``timm.list_models`` and
``torchvision.models.get_model`` / ``list_models``.

Example:
    >>> from metricssl.models.zoo import build_from_spec
    >>> net = build_from_spec("metricssl.models:SmallCNN", (1, 28, 28), embedding_dim=32)
    >>> net.num_features
    32
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .embedder import probe_num_features

# The packages a spec can name a model of; each is the metricssl extra that installs it.
PACKAGES = ("timm", "torchvision")
SPEC_FORMS = ("timm:NAME", "torchvision:NAME", "package.module:attr")
# Where torchvision's classification models keep their classifier.
_CLASSIFIERS = ("fc", "classifier", "heads", "head")


class BackboneImportError(ImportError, ValueError):
    """A spec's package or module cannot be imported. An ``ImportError``, and a
    ``ValueError`` like every other bad spec, so the command line reports it in one line
    and checkpoint loading as a ``CheckpointError``."""


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed spec: ``kind`` is ``"timm"``, ``"torchvision"`` or ``"module"``; ``module``
    the package or module to import; ``name`` the model name or the attribute path."""

    kind: str
    module: str
    name: str


def is_backbone_spec(name) -> bool:
    """Whether ``name`` has the form of a spec (a string with ``:``); see
    :func:`parse_backbone_spec` for whether it is a valid one."""
    return isinstance(name, str) and ":" in name


def parse_backbone_spec(spec) -> BackboneSpec:
    """``spec`` split into its parts; a malformed spec is a ``ValueError`` naming the forms.

    Nothing is imported: this checks the form only.

    Example:
        >>> parse_backbone_spec("my_pkg.nets:Net")
        BackboneSpec(kind='module', module='my_pkg.nets', name='Net')
    """
    if not isinstance(spec, str):
        raise TypeError(f"backbone spec must be a string, got {type(spec).__name__}")
    module, sep, name = spec.partition(":")
    module, name = module.strip(), name.strip()
    if module in PACKAGES and sep and name and (module == "timm" or ":" not in name):
        return BackboneSpec(module, module, name)
    if sep and _dotted(module) and _dotted(name):
        return BackboneSpec("module", module, name)
    raise ValueError(f"backbone spec {spec!r} is not one of the forms {list(SPEC_FORMS)}")


def build_from_spec(spec: str, input_shape: Sequence[int], **kwargs) -> nn.Module:
    """The backbone that ``spec`` names (see the module docstring), for images of
    ``input_shape = (C, H, W)``; ``kwargs`` go to its builder.

    Raises:
        BackboneImportError: the package (named with the extra that installs it) or the
            module cannot be imported.
        ValueError: a malformed spec, an unknown model name, a missing attribute, a module
            whose output on the images is not ``(N, F)`` features.
        TypeError: the attribute is not an ``nn.Module`` or something that returns one.
    """
    parsed = parse_backbone_spec(spec)
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    builders = {"timm": _timm, "torchvision": _torchvision, "module": _attribute}
    net = builders[parsed.kind](spec, parsed, shape, dict(kwargs))
    _check_features(net, spec, parsed, shape)
    return net


def adapt_input_weight(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """A first convolution's weight ``(O, I, kH, kW)`` for ``channels`` input channels, as
    timm adapts pretrained weights: summed over the inputs for one channel, else the inputs
    repeated cyclically and scaled by ``I / channels``, which keeps the response's scale (a
    grey image gets the original response exactly for one channel and for multiples of
    ``I``).

    Example:
        >>> adapt_input_weight(torch.ones(4, 3, 3, 3), 1).shape
        torch.Size([4, 1, 3, 3])
    """
    inputs = weight.shape[1]
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeated = weight.repeat(1, math.ceil(channels / inputs), 1, 1)[:, :channels]
    return repeated * (inputs / channels)


# -- the three kinds ----------------------------------------------------------------------------


def _timm(spec: str, parsed: BackboneSpec, shape: tuple, kwargs: dict) -> nn.Module:
    timm = _import_package(spec, "timm")
    _refuse_set_from_data(spec, kwargs, ("num_classes", "in_chans"))
    # A hub name (hf-hub:ORG/NAME, local-dir:PATH) is for create_model to resolve.
    if ":" not in parsed.name and not timm.is_model(parsed.name):
        known = timm.list_models()
        raise ValueError(_unknown_model(spec, parsed, known, "timm.list_models('*resnet*')"))
    kwargs.setdefault("pretrained", False)
    net = timm.create_model(parsed.name, num_classes=0, in_chans=shape[0], **kwargs)
    return _check_module(spec, net, "timm.create_model")


def _torchvision(spec: str, parsed: BackboneSpec, shape: tuple, kwargs: dict) -> nn.Module:
    models = _import_package(spec, "torchvision", "torchvision.models")
    _refuse_set_from_data(spec, kwargs, ("num_classes",))
    known = models.list_models()
    if parsed.name not in known:
        raise ValueError(_unknown_model(spec, parsed, known, "torchvision.models.list_models()"))
    net = _check_module(spec, models.get_model(parsed.name, **kwargs), "get_model")
    _drop_classifier(spec, net)
    _adapt_first_conv(spec, net, shape[0])
    return net


def _attribute(spec: str, parsed: BackboneSpec, shape: tuple, kwargs: dict) -> nn.Module:
    try:
        target = importlib.import_module(parsed.module)
    except ImportError as err:
        raise BackboneImportError(
            f"backbone {spec!r}: cannot import module {parsed.module!r}: {err}. The command "
            "line imports from the current folder; from Python, the module's folder must be "
            "on sys.path (PYTHONPATH)",
            name=parsed.module,
        ) from err
    for part in parsed.name.split("."):
        if not hasattr(target, part):
            raise ValueError(
                f"backbone {spec!r}: module {parsed.module!r} has no attribute {parsed.name!r}"
            )
        target = getattr(target, part)
    if isinstance(target, nn.Module):
        if kwargs:
            raise ValueError(
                f"backbone {spec!r} is a module instance: backbone_kwargs "
                f"{sorted(kwargs)} cannot apply to it"
            )
        return copy.deepcopy(target)
    if not callable(target):
        raise TypeError(
            f"backbone {spec!r} is a {type(target).__name__}, not an nn.Module, a Module "
            "class or a function returning one"
        )
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins and C extensions have none
        signature = None
    if signature is not None:
        # Filled in from the data when the builder asks for them by name.
        given = {"in_channels": shape[0], "input_shape": shape}
        for key, value in given.items():
            if key in signature.parameters and key not in kwargs:
                kwargs[key] = value
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            raise TypeError(
                f"backbone {spec!r} cannot be called with {sorted(kwargs)}: {err}; set its "
                "arguments with backbone_kwargs"
            ) from None
    return _check_module(spec, target(**kwargs), parsed.name)


# -- helpers --------------------------------------------------------------------------------


def _dotted(path: str) -> bool:
    return bool(path) and all(part.isidentifier() for part in path.split("."))


def _import_package(spec: str, package: str, module: str | None = None):
    try:
        return importlib.import_module(module or package)
    except ImportError as err:
        raise BackboneImportError(
            f"backbone {spec!r} needs the {package} package: pip install "
            f"'metricssl[{package}]' ({err})",
            name=package,
        ) from err


def _refuse_set_from_data(spec: str, kwargs: dict, names: tuple[str, ...]) -> None:
    for name in names:
        if name in kwargs:
            raise ValueError(
                f"backbone {spec!r}: backbone_kwargs[{name!r}] is not yours to set: the "
                "backbone returns features (no classes) for the data's channels"
            )


def _unknown_model(spec: str, parsed: BackboneSpec, known, listing: str) -> str:
    close = difflib.get_close_matches(parsed.name, list(known or ()), n=3)
    hint = f"; close names: {close}" if close else ""
    return f"backbone {spec!r}: {parsed.kind} has no model {parsed.name!r}{hint} (see {listing})"


def _check_module(spec: str, net, made_by: str) -> nn.Module:
    if not isinstance(net, nn.Module):
        raise TypeError(
            f"backbone {spec!r}: {made_by} returned a {type(net).__name__}, not an nn.Module"
        )
    return net


def _drop_classifier(spec: str, net: nn.Module) -> None:
    """The classifier's last Linear replaced by Identity: the features that fed it remain
    (after the classifier's own pre-logits layers, as in VGG and MobileNetV3)."""
    for attr in _CLASSIFIERS:
        head = getattr(net, attr, None)
        if isinstance(head, nn.Module):
            break
    else:
        raise ValueError(f"backbone {spec!r}: no classifier ({', '.join(_CLASSIFIERS)}) found")
    if isinstance(head, nn.Linear):
        setattr(net, attr, nn.Identity())
        return
    linears = [name for name, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"backbone {spec!r}: its {attr} has no nn.Linear classifier to remove")
    _replace(head, linears[-1], nn.Identity())


def _adapt_first_conv(spec: str, net: nn.Module, channels: int) -> None:
    found = next(((n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None or found[1].in_channels == channels:
        return
    name, conv = found
    if conv.groups != 1:
        raise ValueError(f"backbone {spec!r}: its first convolution {name!r} is grouped")
    new = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(adapt_input_weight(conv.weight, channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    _replace(net, name, new)


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _check_features(net: nn.Module, spec: str, parsed: BackboneSpec, shape: tuple) -> None:
    try:
        width = probe_num_features(net, shape)
    except ValueError as err:
        raise ValueError(f"backbone {spec!r}: {err}") from err
    except Exception as err:  # the model's own forward failed on these images
        sizes = {"timm": " (timm: img_size=...)", "torchvision": " (torchvision: image_size=...)"}
        raise ValueError(
            f"backbone {spec!r} fails on images of shape (2, {', '.join(map(str, shape))}): "
            f"{type(err).__name__}: {err}. A model built for one input size takes the data's "
            f"size through backbone_kwargs{sizes.get(parsed.kind, '')}"
        ) from err
    declared = getattr(net, "num_features", None)
    if declared is None or declared == width:
        return
    if parsed.kind != "timm":
        raise ValueError(
            f"backbone {spec!r}: its num_features is {declared!r} but it returns {width} features"
        )
    # timm's num_features is the width before a pre-logits layer (MobileNetV3: 960, while
    # num_classes=0 returns the 1280 of its head_hidden_size); this package reads
    # num_features as the output width.
    net.num_features = width
