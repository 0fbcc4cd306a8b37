"""Checksums of files, read in blocks (a file of any size in bounded memory)."""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 20


def file_digests(path: str | os.PathLike, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of a file's bytes under each of ``algorithms`` (hashlib names), in one read.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x"
        >>> _ = path.write_bytes(b"abc")
        >>> file_digests(path, ("md5",))["md5"]
        '900150983cd24fb0d6963f7d28e17f72'
    """
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            for h in hashers.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashers.items()}


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (SHA-256 by default)."""
    return file_digests(path, (algorithm,))[algorithm]
