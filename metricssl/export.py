"""The encoder alone, out of a training checkpoint: images in, features out.

:func:`export_encoder` writes the backbone of a trained method with its input size and
normalisation, in one of three formats:

- ``safetensors``: the weights and, as metadata, what rebuilds the module (backbone name and
  arguments, input shape, mean and std) plus a SHA-256 of all of it; loading runs no code.
- ``torchscript``: a self-contained TorchScript program (the preprocessing included), for
  ``torch.jit.load`` in Python or C++ without metricssl; its SHA-256 is stored in the
  archive's comment, as for checkpoints.
- ``onnx``: an ONNX graph taking float32 (N, C, H, W) images in [0, 1] at the input size
  (normalisation included), with the metadata in its ``metadata_props``; needs the ``onnx``
  package (and ``onnxscript`` for torch's exporter).

:func:`load_encoder` reads a safetensors or TorchScript export back as an
:class:`EncoderModule`-like ``nn.Module``: uint8 images (or float in [0, 1]) of any size in,
features out (it resizes to the trained size and normalises).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .core.atomic import atomic_write
from .ssl.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checksummed_zip,
    verify_zip_checksum,
)

FORMATS = ("safetensors", "torchscript", "onnx")
ENCODER_FORMAT = "metricssl-encoder"
ENCODER_VERSION = 1
_METADATA_FILE = "metricssl.json"  # TorchScript extra file holding the metadata
_ONNX_INPUT = "float32 (N, C, H, W) images in [0, 1] at input_shape"


class EncoderModule(nn.Module):
    """A backbone with its input conversion: uint8 or [0, 1] float images -> features.

    Images are (N, C, H, W) or one (C, H, W) image; uint8 ones are divided by 255, any size
    is resized (bilinear, antialiased) to the trained ``input_shape``, then normalised with
    ``mean`` and ``std``. The output is float32 (N, feature_dim).

    Args:
        backbone: the trained module mapping normalised (N, C, H, W) float images to features.
        input_shape: (C, H, W) the backbone was trained on.
        mean, std: the per-channel normalisation of training (None: none).

    Example:
        >>> import torch
        >>> from metricssl.models import SmallCNN
        >>> enc = EncoderModule(SmallCNN(in_channels=1), (1, 28, 28), mean=[0.5], std=[0.5])
        >>> enc(torch.zeros(2, 1, 32, 32, dtype=torch.uint8)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        backbone: nn.Module,
        input_shape: Sequence[int],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
        channels = input_shape[0]
        self.backbone = backbone
        self.channels, self.height, self.width = input_shape
        self.register_buffer("mean", _per_channel("mean", mean, channels, 0.0))
        self.register_buffer("std", _per_channel("std", std, channels, 1.0))
        if bool((self.std <= 0).any()):
            raise ValueError(f"std must be positive, got {std}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError("images must be (N, C, H, W) or one (C, H, W) image")
        if images.shape[1] != self.channels:
            raise ValueError(
                "images have "
                + str(images.shape[1])
                + " channels, the encoder was trained on "
                + str(self.channels)
            )
        if images.dtype == torch.uint8:
            x = images.to(torch.float32) / 255.0
        elif images.is_floating_point():
            x = images.to(torch.float32)
        else:
            raise TypeError("images must be uint8 or floating point in [0, 1]")
        if x.shape[2] != self.height or x.shape[3] != self.width:
            x = F.interpolate(
                x, size=[self.height, self.width], mode="bilinear", align_corners=False,
                antialias=True,
            )  # fmt: skip
        x = (x - self.mean) / self.std
        return self.backbone(x).to(torch.float32)


def _per_channel(name: str, values, channels: int, default: float) -> torch.Tensor:
    if values is None:
        values = [default]
    values = [float(v) for v in values]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)


def _normalisation_of(method) -> tuple[list[float] | None, list[float] | None]:
    """The mean and std of a method's clean transform (an empty Compose or one Normalize)."""
    from .augment.compose import Compose
    from .augment.normalize import Normalize

    pre = getattr(method, "preprocess", None)
    if pre is None:
        return None, None
    steps = list(pre.transforms) if isinstance(pre, Compose) else [pre]
    if not steps:
        return None, None
    if len(steps) == 1 and isinstance(steps[0], Normalize):
        return list(steps[0].mean), list(steps[0].std)
    raise ValueError(
        f"the method's clean transform {pre!r} is not a plain normalisation: it cannot be "
        "exported with the encoder"
    )


def _embedding_network(method) -> nn.Module:
    """What ``method.embed`` runs on clean images: the backbone, followed by the embedding
    head of methods that have one (supervised metric learning with ``embedding_dim``)."""
    head = getattr(method, "embedding_head", None)
    return method.backbone if head is None else nn.Sequential(method.backbone, head)


def encoder_from_checkpoint(
    checkpoint: str | os.PathLike, backbone: nn.Module | None = None
) -> tuple[EncoderModule, dict]:
    """The encoder of a Trainer checkpoint, and the metadata an export stores with it.

    ``backbone``: an empty instance of the architecture, for runs that trained a custom
    backbone module (as for :func:`~metricssl.ssl.checkpoint.load_checkpoint`).
    """
    method, meta = load_checkpoint(checkpoint, backbone=backbone)
    build = (meta.get("config") or {}).get("build") or {}
    mean, std = _normalisation_of(method)
    if method.input_shape is None:
        raise CheckpointError(f"{checkpoint}: the method records no input shape")
    network = _embedding_network(method)
    encoder = EncoderModule(network, method.input_shape, mean, std).eval()
    with torch.no_grad():
        feature_dim = int(encoder(torch.zeros((1, *encoder.input_shape))).shape[1])
    metadata = {
        "format": ENCODER_FORMAT,
        "version": ENCODER_VERSION,
        "method": meta["method"],
        "epoch": meta["epoch"],
        # A named backbone is rebuilt by name on load; anything else needs the module again.
        "backbone": build.get("backbone") if network is method.backbone else None,
        "backbone_kwargs": build.get("backbone_kwargs") or {},
        "input_shape": list(encoder.input_shape),
        "mean": encoder.mean.flatten().tolist(),
        "std": encoder.std.flatten().tolist(),
        "feature_dim": feature_dim,
        "input": "uint8 (N, C, H, W) images or float in [0, 1]; resized to input_shape",
    }
    return encoder, metadata


def export_encoder(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    format: str = "safetensors",
    backbone: nn.Module | None = None,
) -> Path:
    """Write the encoder of ``checkpoint`` alone to ``out``, with its input size and
    normalisation.

    Args:
        checkpoint: a Trainer checkpoint (``OUT/checkpoints/last.pt``).
        out: the file to write (written atomically).
        format: ``"safetensors"``, ``"torchscript"`` or ``"onnx"`` (see the module docs).
        backbone: an empty instance of a custom backbone module, for runs that trained one.
            safetensors exports of such runs need it again to load.

    Returns:
        The path written.

    Raises:
        ValueError: an unknown format; ImportError: onnx (or onnxscript) not installed;
        FileNotFoundError, CheckpointError: see :func:`~metricssl.ssl.checkpoint.read_checkpoint`.

    Example:
        >>> from metricssl.export import export_encoder, load_encoder
        >>> export_encoder("runs/x/checkpoints/last.pt", "enc.safetensors")  # doctest: +SKIP
        >>> features = load_encoder("enc.safetensors")(images)  # doctest: +SKIP
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path, got {type(out).__name__}")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"out must be a file, {str(out)!r} is a folder")
    if format == "onnx":
        _require_onnx()
    encoder, metadata = encoder_from_checkpoint(checkpoint, backbone)
    if format == "safetensors":
        from safetensors.torch import save

        tensors = {
            k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()
        }
        header = {k: json.dumps(v) for k, v in metadata.items()}
        header["sha256"] = _safetensors_digest(tensors, header)
        with atomic_write(out) as f:
            f.write(save(tensors, metadata=header))
    elif format == "torchscript":
        program = _script(encoder)
        extra = {_METADATA_FILE: json.dumps(metadata)}
        with _quiet_torchscript():
            save_checksummed_zip(out, lambda f: torch.jit.save(program, f, _extra_files=extra))
    else:
        _export_onnx(encoder, metadata, out)
    return out


@contextlib.contextmanager
def _quiet_torchscript():
    """TorchScript was asked for by name: its deprecation notices, and the tracer's notes on
    the backbones' own input checks (constants at the traced size), are not news here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _script(encoder: EncoderModule):
    """TorchScript of the encoder: the backbone traced at the input size (any module
    traces), the conversion scripted around it (its branches on dtype and size kept)."""
    example = torch.zeros((2, *encoder.input_shape))
    with _quiet_torchscript():
        scripted = EncoderModule(
            torch.jit.trace(encoder.backbone.eval(), example, check_trace=False),
            encoder.input_shape,
            encoder.mean.flatten().tolist(),
            encoder.std.flatten().tolist(),
        )
        return torch.jit.script(scripted.eval())


def _export_onnx(encoder: EncoderModule, metadata: dict, out: Path) -> None:
    """The encoder as an ONNX graph for float32 images in [0, 1] at the input size, any
    batch size; the export metadata in the model's ``metadata_props``."""
    example = torch.rand((2, *encoder.input_shape))
    program = torch.onnx.export(
        encoder.eval(),
        (example,),
        input_names=["images"],
        output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        dynamo=True,
        verbose=False,
    )
    model = program.model_proto
    for key, value in {**metadata, "input": _ONNX_INPUT}.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    with atomic_write(out) as f:
        f.write(model.SerializeToString())


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"format='onnx' needs the onnx and onnxscript packages ({err}): "
            "pip install 'metricssl[onnx]'"
        ) from err


def _safetensors_digest(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> str:
    """SHA-256 of the metadata (sorted) and every tensor's name, dtype, shape and bytes."""
    sha = hashlib.sha256(json.dumps({k: header[k] for k in sorted(header)}).encode())
    for name in sorted(tensors):
        t = tensors[name]
        sha.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        sha.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def load_encoder(
    path: str | os.PathLike, backbone: nn.Module | None = None, device: str | torch.device = "cpu"
) -> nn.Module:
    """An exported encoder (:func:`export_encoder`) as a module: uint8 images (or float in
    [0, 1]) of any size in, float32 features out. Its ``metadata`` attribute holds what the
    export stored (method, input_shape, mean, std, feature_dim, ...).

    Args:
        path: a ``.safetensors`` or TorchScript export (the format is read from the file).
            ONNX exports are for ONNX runtimes (``onnxruntime.InferenceSession``).
        backbone: for safetensors exports of a custom backbone module: an empty instance of
            the same architecture.
        device: where to put the module.

    Raises:
        FileNotFoundError: no file; CheckpointError: a corrupted file (checksum mismatch), or
        one that is not a metricssl export.

    Example:
        >>> from metricssl import load_encoder
        >>> encoder = load_encoder("encoder.safetensors")  # doctest: +SKIP
        >>> features = encoder(uint8_images)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no encoder at {str(path)!r}")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        encoder = _load_torchscript(path)
    elif len(head) == 9 and head[8:9] == b"{":
        encoder = _load_safetensors(path, backbone)
    elif path.suffix.lower() == ".onnx":
        raise ValueError(
            f"{path}: ONNX exports are read by ONNX runtimes (onnxruntime.InferenceSession); "
            "load_encoder reads safetensors and TorchScript exports"
        )
    else:
        raise CheckpointError(f"{path}: not a metricssl encoder export (safetensors/TorchScript)")
    return encoder.to(device).eval()


def _check_metadata(path: Path, metadata: dict) -> dict:
    if metadata.get("format") != ENCODER_FORMAT:
        raise CheckpointError(f"{path}: not a metricssl encoder export")
    if metadata.get("version") != ENCODER_VERSION:
        raise CheckpointError(
            f"{path}: encoder export version {metadata.get('version')} is not supported "
            f"(this metricssl reads version {ENCODER_VERSION})"
        )
    return metadata


def _load_torchscript(path: Path) -> nn.Module:
    if not verify_zip_checksum(path, what="encoder export"):
        raise CheckpointError(
            f"{path}: not a metricssl encoder export (a TorchScript export carries a checksum)"
        )
    extra = {_METADATA_FILE: ""}
    try:
        with _quiet_torchscript():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        metadata = json.loads(extra[_METADATA_FILE] or "{}")
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable TorchScript encoder ({err})") from err
    module.metadata = _check_metadata(path, metadata)
    return module


def _load_safetensors(path: Path, backbone: nn.Module | None) -> EncoderModule:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            # Another safetensors file (embeddings, weights) is refused before it is read.
            if header.get("format") != json.dumps(ENCODER_FORMAT):
                raise CheckpointError(f"{path}: not a metricssl encoder export")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    stored = header.pop("sha256", None)
    if stored != _safetensors_digest(tensors, header):
        raise CheckpointError(
            f"{path}: the file is corrupted: its content does not match the SHA-256 stored "
            "when it was exported"
        )
    metadata = _check_metadata(path, {k: json.loads(v) for k, v in header.items()})
    if backbone is None:
        if metadata.get("backbone") is None:
            raise CheckpointError(
                f"{path}: exported from a backbone passed as a module object (or a backbone "
                "with an embedding head); pass backbone=<an empty instance of the same "
                "architecture>, or train with a spec that rebuilds it by name "
                "(backbone='package.module:attr')"
            )
        from .ssl.registry import build_backbone

        try:
            backbone = build_backbone(
                metadata["backbone"], metadata["input_shape"], **metadata["backbone_kwargs"]
            )
        except (TypeError, ValueError) as err:  # a spec whose package or module is missing
            raise CheckpointError(f"{path}: cannot rebuild the backbone: {err}") from err
    encoder = EncoderModule(backbone, metadata["input_shape"], metadata["mean"], metadata["std"])
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the backbone: {err}") from err
    encoder.metadata = metadata
    return encoder
