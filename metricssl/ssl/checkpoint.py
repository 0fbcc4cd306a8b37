"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so
loading never runs code from the file. ``format`` and ``version`` mark it as ours; ``method``
names the SSL method and ``config`` holds everything needed to rebuild it (see
:func:`metricssl.ssl.registry.build_method`).
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..core.atomic import atomic_write

FORMAT = "metricssl-ssl-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable metricssl checkpoint (corrupted, truncated, foreign)."""


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, flushed
    to disk, then renamed over ``path``. A crash mid-write leaves the previous file intact."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
    return path


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated or corrupted, holds objects that safe loading
            refuses, or is not a metricssl SSL checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused by safe loading (weights_only=True): it holds pickled objects, "
            f"so it was not written by metricssl ({err})"
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint, the file is corrupted or truncated ({err})"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a metricssl SSL checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {data.get('version')} is not supported "
            f"(this metricssl reads version {VERSION})"
        )
    for key in ("method", "config", "model"):
        if key not in data:
            raise CheckpointError(f"{path}: the checkpoint has no {key!r} entry")
    return data


def capture_rng_state(device: str | torch.device | None = None) -> dict:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain values.

    ``device``: the device the run trains on, recorded so that a resume on another GPU
    continues the stream this one used (see :func:`restore_rng_state`).
    """
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if device is not None:
        state["device"] = str(torch.device(device))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, device: str | torch.device | None = None) -> bool:
    """Inverse of :func:`capture_rng_state`, mapped onto this machine's devices.

    Python's, NumPy's and torch's CPU generators are always restored. Where CUDA is
    available, each visible GPU gets the checkpoint's state of the GPU with its index, when
    the checkpoint has one (a checkpoint of a machine with more GPUs has states for GPUs
    that are not here: they are left alone). When ``device`` is a GPU and the checkpoint
    records the GPU its run trained on, ``device`` gets that GPU's state: a run moved from
    ``cuda:0`` to ``cuda:1`` continues the stream it was drawing from.

    Returns:
        Whether ``device``'s generator continues the checkpoint's stream: always for the CPU
        (or None); for a GPU, when the checkpoint holds a CUDA state for it.

    Raises:
        CheckpointError: a CPU or CUDA state that no generator of that kind can take.
    """
    cuda_states = list(state.get("cuda") or [])
    for s in cuda_states:
        if not (torch.is_tensor(s) and s.dtype == torch.uint8 and s.ndim == 1):
            raise CheckpointError("the checkpoint's CUDA random states are not byte tensors")
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    try:
        torch.set_rng_state(state["torch"])
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(f"the torch CPU random state cannot be restored: {err}") from err
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available():
        return device is None or device.type != "cuda"
    for index, s in enumerate(cuda_states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(s, index)
    if device is None or device.type != "cuda":
        return True
    here = torch.cuda.current_device() if device.index is None else device.index
    trained_on = torch.device(state.get("device", f"cuda:{here}"))
    if trained_on.type != "cuda":
        return False  # the saved run trained on the CPU: no CUDA stream to continue
    there = here if trained_on.index is None else trained_on.index
    if there >= len(cuda_states):
        return False
    torch.cuda.set_rng_state(cuda_states[there], here)
    return True


# The size of a CPU generator's state (an MT19937 state), to tell it from an accelerator's
# (a Philox seed and offset) in checkpoints that do not record the generator's device.
_CPU_STATE_BYTES = torch.Generator().get_state().numel()


def restore_generator(
    generator: torch.Generator, state: torch.Tensor, device_type: str | None = None
) -> bool:
    """Load ``state`` (``generator.get_state()`` of a saved run) into ``generator`` when it
    was written by a generator of the same device type, e.g. not a CUDA generator's state
    into a CPU generator. ``device_type``: the saved generator's (``"cpu"``, ``"cuda"``);
    None guesses it from the state's size (CPU states have their own size).

    Returns:
        True when restored; False, with ``generator`` untouched, when the device types
        differ (the caller re-seeds it).

    Raises:
        CheckpointError: a state of the right device type that the generator refuses.

    Example:
        >>> import torch
        >>> from metricssl.ssl.checkpoint import restore_generator
        >>> g = torch.Generator().manual_seed(1)
        >>> restore_generator(g, torch.Generator().manual_seed(2).get_state(), "cpu")
        True
        >>> restore_generator(g, torch.zeros(16, dtype=torch.uint8), "cuda")
        False
    """
    if device_type is None:
        is_cpu = torch.is_tensor(state) and state.numel() == _CPU_STATE_BYTES
        device_type = "cpu" if is_cpu else "an accelerator"
        same = is_cpu == (generator.device.type == "cpu")
    else:
        same = device_type == generator.device.type
    if not same:
        return False
    try:
        generator.set_state(state)
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"the saved {device_type} generator state does not fit a {generator.device.type} "
            f"generator: {err}"
        ) from err
    return True


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    backbone: torch.nn.Module | None = None,
    method: torch.nn.Module | None = None,
):
    """Rebuild the trained method from a Trainer checkpoint.

    Args:
        path: ``OUT/checkpoints/last.pt`` (or any file the Trainer wrote).
        device: where to put the method.
        backbone: the backbone module, when the run trained a custom module rather than a
            named backbone (an empty instance of the same architecture).
        method: a ready method to load the weights into, when the run trained a custom
            :class:`~metricssl.ssl.method.SSLMethod`.

    Returns:
        ``(method, metadata)``: the method in eval mode, and a dict with ``method`` (name),
        ``epoch``, ``step``, ``config`` (build and training settings), ``history`` (metrics
        per epoch) and ``metrics`` (the last epoch's).

    Raises:
        FileNotFoundError, CheckpointError: see :func:`read_checkpoint`; CheckpointError also
        when the weights do not fit the rebuilt model.

    Example:
        >>> from metricssl.ssl.checkpoint import load_checkpoint
        >>> from metricssl.ssl.embed import embed_dataset
        >>> method, meta = load_checkpoint("runs/x/checkpoints/last.pt")  # doctest: +SKIP
        >>> features = embed_dataset(method, images)  # doctest: +SKIP
    """
    from .registry import build_method, stored_hparams

    data = read_checkpoint(path)
    build = (data.get("config") or {}).get("build")
    if method is None:
        if build is None:
            raise CheckpointError(
                f"{path}: written for a custom method; pass method=<the same SSLMethod>"
            )
        if build.get("backbone") is None and backbone is None:
            raise CheckpointError(
                f"{path}: trained a custom backbone module; pass backbone=<the same module>"
            )
        try:
            method = build_method(
                build["method"],
                build["input_shape"],
                backbone=backbone if backbone is not None else build["backbone"],
                backbone_kwargs=build.get("backbone_kwargs"),
                hparams=stored_hparams(build["method"], build.get("hparams")),
                mean=build.get("mean"),
                std=build.get("std"),
                num_classes=build.get("num_classes"),
                num_samples=build.get("num_samples"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: cannot rebuild the method: {err}") from err
    elif getattr(method, "name", None) != data["method"]:
        raise CheckpointError(
            f"{path}: checkpoint of method {data['method']!r}, but method= is "
            f"{getattr(method, 'name', type(method).__name__)!r}"
        )
    try:
        method.load_state_dict(data["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the weights do not fit the model: {err}") from err
    method.to(device).eval()
    history = list(data.get("history", []))
    metadata = {
        "method": data["method"],
        "epoch": int(data.get("epoch", 0)),
        "step": int(data.get("step", 0)),
        "config": data.get("config"),
        "history": history,
        "metrics": dict(history[-1]) if history else {},
    }
    return method, metadata
