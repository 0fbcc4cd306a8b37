"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# A new file only (never one that exists, never through a symlink), in binary on Windows.
_CREATE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)
_HOST = socket.gethostname().replace(os.sep, "_") or "host"


def temp_path_for(path: str | os.PathLike) -> Path:
    """The temporary file :func:`atomic_write` writes before renaming it to ``path``:
    ``.NAME.HOST-PID-THREAD.tmp`` next to it, one per writer, so that writers on several
    hosts sharing a folder, or in several threads, never write into each other's file.

    Example:
        >>> temp_path_for("runs/a/last.pt").name.startswith(".last.pt.")
        True
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{threading.get_native_id()}.tmp")


def _process_is_gone(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it: keep the file rather than guess
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left behind: those of this
    host whose process no longer exists. Files of live writers and of other hosts are kept.

    Returns:
        The files removed.
    """
    path = Path(path)
    prefix = f".{path.name}.{_HOST}-"
    removed = []
    for candidate in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid_text, _, _ = candidate.name[len(prefix) : -len(".tmp")].partition("-")
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        if _process_is_gone(int(pid_text)):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def _create_exclusively(tmp: Path) -> int:
    """Open ``tmp`` as a new file. Whatever holds that name is a leftover of this writer's
    name (a killed save of an earlier process with the same pid, or a planted file or
    symlink): it is unlinked (a symlink itself, never its target) and the file created anew."""
    try:
        return os.open(tmp, _CREATE_FLAGS, 0o666)
    except FileExistsError:
        pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        return os.open(tmp, _CREATE_FLAGS, 0o666)
    except FileExistsError:
        raise FileExistsError(
            f"cannot create the temporary file {str(tmp)!r}: something keeps re-creating it"
        ) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Yield a file opened on a temporary name next to ``path``.

    On a clean exit the file is flushed to disk and renamed over ``path``; if the block
    raises, the temporary file is removed and ``path`` is left as it was. Permissions follow
    the umask, as for a plain ``open()``.

    The temporary file (:func:`temp_path_for`) is created exclusively (``O_EXCL``, and
    ``O_NOFOLLOW`` where the system has it): a file or symlink planted at its name is never
    written through. Temporary files of killed writes of ``path`` are removed first
    (:func:`remove_stale_temps`), so they do not pile up.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
        >>> with atomic_write(target, "w") as f:
        ...     _ = f.write("epoch,loss\\n")
        >>> target.read_text()
        'epoch,loss\\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = temp_path_for(path)
    fd = _create_exclusively(tmp)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
