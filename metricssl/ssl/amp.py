"""Mixed precision: which autocast dtype a Trainer's ``amp`` setting means on a device."""

from __future__ import annotations

import torch

from ..core.validation import check_choice

AMP_MODES = ("auto", "off", "bf16", "fp16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether the CUDA ``device`` computes in bfloat16 in hardware: compute capability 8.0
    or later (A100, H100, RTX 30xx/40xx) or a ROCm GPU.

    ``torch.cuda.is_bf16_supported()`` also answers True on a V100 (7.0) or T4 (7.5), where
    bfloat16 is emulated through float32 and runs slower than float32 itself; it also looks
    at the current device, not necessarily ``device``.
    """
    if torch.version.hip:
        return True
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def autocast_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None: no autocast).

    ``auto``: bfloat16 on a CUDA device that computes it natively (:func:`native_bf16`),
    float16 on older CUDA devices (which then need a ``GradScaler``), off elsewhere;
    ``bf16`` and ``fp16`` as named (``fp16`` needs CUDA); ``off``.

    Example:
        >>> import torch
        >>> from metricssl.ssl.amp import autocast_dtype
        >>> autocast_dtype("auto", "cpu") is None
        True
        >>> autocast_dtype("bf16", "cpu")
        torch.bfloat16
    """
    check_choice("amp", amp, AMP_MODES)
    device = torch.device(device)
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16
