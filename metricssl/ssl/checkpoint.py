"""Checkpoint files: written atomically with a SHA-256 checksum, read with
``torch.load(weights_only=True)`` after the checksum is verified.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so
loading never runs code from the file. ``format`` and ``version`` mark it as ours; ``method``
names the SSL method and ``config`` holds everything needed to rebuild it (see
:func:`metricssl.ssl.registry.build_method`).

The file is the zip archive ``torch.save`` writes, with the SHA-256 of that archive stored
in the archive's comment field: ``torch.load`` (and any zip tool) still reads it, and
:func:`read_checkpoint` refuses a file whose bytes changed since it was saved (torch itself
does not check the zip CRCs: a flipped byte would load and give other scores).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ..core.atomic import atomic_write

FORMAT = "metricssl-ssl-checkpoint"
VERSION = 1

# The zip comment that carries the checksum: a tag, then the hex digest.
_CHECKSUM_TAG = b"metricssl-sha256:"
_COMMENT_BYTES = len(_CHECKSUM_TAG) + 64
_EOCD_BYTES = 22  # zip "end of central directory" record without its comment
_READ_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A file that is not a usable metricssl checkpoint (corrupted, truncated, foreign)."""


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through and keeps the last bytes."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.tail = b""

    def write(self, data) -> int:
        data = bytes(data)
        self.sha.update(data)
        self.tail = (self.tail + data[-_EOCD_BYTES:])[-_EOCD_BYTES:]
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_checksummed_zip(path: str | os.PathLike, write: Callable[[IO], object]) -> Path:
    """Write a zip archive atomically with its SHA-256 as the archive's comment.

    ``write(f)`` writes the archive (``torch.save(obj, f)``, ``torch.jit.save(m, f)``); the
    digest of what it wrote then becomes the zip comment, so that torch and zip tools still
    read the file and :func:`verify_zip_checksum` can tell whether a byte changed since.
    """
    path = Path(path)
    with atomic_write(path) as f:
        writer = _HashingWriter(f)
        write(writer)
        # torch ends its archive with an empty comment (the record's last 2 bytes are its
        # length): the digest covers the archive as written, then becomes its comment.
        tail = writer.tail
        if len(tail) != _EOCD_BYTES or tail[:4] != b"PK\x05\x06" or tail[-2:] != b"\0\0":
            raise RuntimeError(f"{path}: the archive written does not end with an empty comment")
        comment = _CHECKSUM_TAG + writer.sha.hexdigest().encode("ascii")
        f.seek(-2, os.SEEK_CUR)
        f.write(struct.pack("<H", len(comment)) + comment)
    return path


def verify_zip_checksum(path: str | os.PathLike, what: str = "checkpoint") -> bool:
    """Check the SHA-256 :func:`save_checksummed_zip` stored in ``path``.

    Returns:
        True when the file's bytes match it; False when the file carries no checksum.

    Raises:
        CheckpointError: the bytes differ from those saved (a corrupted file).
    """
    path = Path(path)
    stored, covered = _stored_checksum(path)
    if stored is None:
        return False
    actual = _file_checksum(path, covered)
    if actual != stored:
        raise CheckpointError(
            f"{path}: the {what} is corrupted: its SHA-256 is {actual}, it was saved with "
            f"{stored}; use another copy (or a backup) of it"
        )
    return True


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically, with its SHA-256 in the zip comment.

    A temporary file in the same folder is written, flushed to disk, then renamed over
    ``path``: a crash mid-write leaves the previous file intact (and the temporary file of
    a killed save is removed by the next save to ``path``).

    Example:
        >>> import tempfile, pathlib
        >>> from metricssl.ssl.checkpoint import save_checkpoint, read_checkpoint
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
        >>> _ = save_checkpoint({"method": "simclr", "config": {}, "model": {}}, path)
        >>> read_checkpoint(path)["method"]
        'simclr'
    """
    data = {"format": FORMAT, "version": VERSION, **payload}
    return save_checksummed_zip(path, lambda f: torch.save(data, f))


def _stored_checksum(path: Path) -> tuple[str | None, int]:
    """The hex digest in the file's zip comment (None when it has none), and how many bytes
    of the file it covers."""
    size = path.stat().st_size
    covered = size - _COMMENT_BYTES - 2
    if covered < _EOCD_BYTES:
        return None, size
    with open(path, "rb") as f:
        f.seek(covered)
        length, comment = struct.unpack("<H", f.read(2))[0], f.read(_COMMENT_BYTES)
    if length != _COMMENT_BYTES or not comment.startswith(_CHECKSUM_TAG):
        return None, size
    return comment[len(_CHECKSUM_TAG) :].decode("ascii", "replace"), covered


def _file_checksum(path: Path, covered: int) -> str:
    """SHA-256 of the first ``covered`` bytes followed by an empty comment length."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        left = covered
        while left:
            chunk = f.read(min(_READ_CHUNK, left))
            if not chunk:
                break
            sha.update(chunk)
            left -= len(chunk)
    sha.update(b"\0\0")
    return sha.hexdigest()


def read_checkpoint(path: str | os.PathLike, map_location="cpu", verify: bool = True) -> dict:
    """Load and check a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        map_location: as in ``torch.load``.
        verify: refuse a file whose SHA-256 does not match the one stored at save time, or
            that carries none. ``False`` loads an unverified file (one written by an older
            metricssl); its content is still checked.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file's bytes changed since it was saved (checksum mismatch), it
            is truncated or corrupted, holds objects that safe loading refuses, is not a
            metricssl SSL checkpoint, or (with ``verify``) carries no checksum.
    """
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, got {verify!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    checked = verify_zip_checksum(path) if verify else True
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
    if not checked:
        raise CheckpointError(
            f"{path}: the checkpoint carries no checksum (written by a metricssl that did "
            f"not store one, or rewritten by another tool), so its bytes cannot be verified; "
            f"read_checkpoint(path, verify=False) loads it unverified, and "
            f"save_checkpoint(read_checkpoint(path, verify=False), path) gives it one"
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


def settings_differences(stored: Mapping, current: Mapping) -> list[str]:
    """``"key old -> new"`` for every setting that differs between two records.

    Example:
        >>> settings_differences({"lr": 0.06, "seed": 0}, {"lr": 0.5, "seed": 0})
        ['lr 0.06 -> 0.5']
    """
    keys = list(stored) + [k for k in current if k not in stored]
    return [
        f"{key} {stored.get(key)!r} -> {current.get(key)!r}"
        for key in keys
        if stored.get(key) != current.get(key)
    ]


def training_changes(
    state: Mapping,
    current: Mapping,
    source: str | os.PathLike = "checkpoint",
    allow_changed_settings: bool = False,
    only_given: bool = False,
) -> list[str]:
    """The differences between a checkpoint's recorded training settings
    (``state["config"]["training"]``) and ``current``, refused unless allowed.

    ``only_given`` compares only the settings in ``current`` (a check made before every
    setting is known, e.g. before the data are read). The Trainer's resume and the command
    line's early check both call this, so one rule and one message decide.

    Raises:
        CheckpointError: listing the differences, when there are some and
            ``allow_changed_settings`` is False.

    Example:
        >>> state = {"config": {"training": {"lr": 0.06, "epochs": 10}}}
        >>> training_changes(state, {"lr": 0.5, "epochs": 10}, allow_changed_settings=True)
        ['lr 0.06 -> 0.5']
    """
    stored = (state.get("config") or {}).get("training") or {}
    if only_given:
        stored = {key: stored[key] for key in current if key in stored}
    changes = settings_differences(stored, current)
    if changes and not allow_changed_settings:
        raise CheckpointError(
            f"{source} was trained with other settings: {'; '.join(changes)}. Run with the "
            f"checkpoint's settings, pass allow_changed_settings=True (--allow-changed-settings) "
            f"to continue with these, or resume=False (--no-resume) to start afresh"
        )
    return changes


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    backbone: torch.nn.Module | None = None,
    method: torch.nn.Module | None = None,
    verify: bool = True,
):
    """Rebuild the trained method from a Trainer checkpoint.

    Args:
        path: ``OUT/checkpoints/last.pt`` (or any file the Trainer wrote).
        device: where to put the method.
        backbone: the backbone module, when the run trained a module object rather than a
            named backbone or a spec (an empty instance of the same architecture).
        method: a ready method to load the weights into, when the run trained a custom
            :class:`~metricssl.ssl.method.SSLMethod`.
        verify: check the file's stored SHA-256 (see :func:`read_checkpoint`).

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

    data = read_checkpoint(path, verify=verify)
    build = (data.get("config") or {}).get("build")
    if method is None:
        if build is None:
            raise CheckpointError(
                f"{path}: written for a custom method; pass method=<the same SSLMethod>"
            )
        if build.get("backbone") is None and backbone is None:
            raise CheckpointError(
                f"{path}: the run trained a backbone passed as a module object, which a "
                "checkpoint cannot rebuild: pass backbone=<an instance of the same "
                "architecture>, or train with a spec that rebuilds it by name "
                "(backbone='package.module:attr', --backbone package.module:attr)"
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
