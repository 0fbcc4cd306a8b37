"""The on-disk container of a saved index: JSON header + FAISS payload + SHA-256 checksum.

Layout (all integers little-endian unsigned 64-bit)::

    MAGIC (16 bytes) | header length | header (UTF-8 JSON object)
    | payload (FAISS's own binary format, ``faiss.write_index``)
    | payload length | SHA-256 of header + payload (32 bytes) | END_MAGIC (8 bytes)

Why this shape:

- the magic strings and the exact length arithmetic turn a foreign or truncated file into
  a clear ``ValueError`` before FAISS reads a byte (FAISS may crash or allocate wildly on a
  damaged stream), and the checksum catches corruption in the middle;
- the payload is streamed through FAISS's callback writer/reader and hashed on the fly, so
  saving or loading a large index never holds a second serialized copy in memory;
- a crafted file cannot make loading allocate much more than the file's size: every length
  is checked against the file size before anything is read, the header is capped at 1 MiB and
  at :data:`MAX_HEADER_DEPTH` levels of JSON nesting (checked before ``json.loads``, which
  would otherwise recurse once per level), and while FAISS reads the payload its
  deserialization limit for a single array is the payload's own length (FAISS's default is
  1 TiB, so a forged array length inside a valid-looking payload would allocate that much);
- nothing is unpickled: the header is JSON and the payload is FAISS's binary format;
- writes are atomic: a temporary file in the target directory, fsync, then ``os.replace``,
  so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading

import numpy as np

from ..core.atomic import atomic_write
from ._faiss import faiss

MAGIC = b"METRICSSL-INDEX\n"
END_MAGIC = b"\nMSSLEND"
FORMAT_VERSION = 1
_U64 = struct.Struct("<Q")
_DIGEST_BYTES = 32
_TRAILER_BYTES = _U64.size + _DIGEST_BYTES + len(END_MAGIC)
_MIN_FILE_BYTES = len(MAGIC) + _U64.size + _TRAILER_BYTES
_MAX_HEADER_BYTES = 1 << 20
# Our headers are one flat JSON object; a little room for future nested settings.
MAX_HEADER_DEPTH = 16
_READ_BLOCK = 1 << 20
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]")
# FAISS's deserialization limit is process-wide: loads in several threads take turns.
_FAISS_LIMIT_LOCK = threading.Lock()


def write_index_file(path: str | os.PathLike, header: dict, index: faiss.Index) -> None:
    """Atomically write ``header`` and the CPU FAISS ``index`` to ``path``."""
    header = {"format_version": FORMAT_VERSION, **header}
    header_bytes = json.dumps(header, sort_keys=True).encode("utf-8")
    path = os.fspath(path)
    with atomic_write(path) as f:
        digest = hashlib.sha256(header_bytes)
        payload_bytes = 0

        def write_payload(data: bytes) -> None:
            nonlocal payload_bytes
            digest.update(data)
            payload_bytes += len(data)
            f.write(data)

        f.write(MAGIC + _U64.pack(len(header_bytes)) + header_bytes)
        faiss.write_index(index, faiss.PyCallbackIOWriter(write_payload))
        f.write(_U64.pack(payload_bytes) + digest.digest() + END_MAGIC)
    directory = os.path.dirname(os.path.abspath(path))
    _fsync_directory(directory)


def read_index_file(path: str | os.PathLike) -> tuple[dict, faiss.Index]:
    """Check and read a file written by :func:`write_index_file`: (header, CPU FAISS index).

    Raises ``ValueError`` for a file that is not a metricssl index, is truncated or damaged,
    or has an unsupported format version.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size < len(MAGIC) or f.read(len(MAGIC)) != MAGIC:
            raise ValueError(f"{path} is not a metricssl index file (wrong magic bytes)")
        if size < _MIN_FILE_BYTES:
            raise ValueError(f"{path} is truncated: {size} bytes is too short for an index")
        (header_len,) = _U64.unpack(f.read(_U64.size))
        f.seek(size - _TRAILER_BYTES)
        trailer = f.read(_TRAILER_BYTES)
        (payload_len,) = _U64.unpack(trailer[: _U64.size])
        expected_digest = trailer[_U64.size : _U64.size + _DIGEST_BYTES]
        header_start = len(MAGIC) + _U64.size
        if header_len > _MAX_HEADER_BYTES:
            raise ValueError(
                f"{path} is damaged: its header length {header_len} exceeds the "
                f"{_MAX_HEADER_BYTES}-byte limit of index headers"
            )
        if (
            trailer[-len(END_MAGIC) :] != END_MAGIC
            or header_start + header_len + payload_len + _TRAILER_BYTES != size
        ):
            raise ValueError(f"{path} is truncated or damaged (its lengths do not add up)")

        f.seek(header_start)
        digest = hashlib.sha256()
        for block in _read_blocks(f, header_len + payload_len):
            digest.update(block)
        if digest.digest() != expected_digest:
            raise ValueError(f"{path} is corrupted: checksum mismatch")

        f.seek(header_start)
        header = _parse_header(f.read(header_len), path)
        remaining = payload_len

        def read_payload(n: int) -> bytes:
            nonlocal remaining
            data = f.read(min(n, remaining))
            remaining -= len(data)
            return data

        index = _read_faiss_payload(read_payload, payload_len, path)
        if remaining:
            raise ValueError(f"{path}: the index payload has {remaining} unread trailing bytes")
    return header, index


def _read_faiss_payload(read_payload, payload_len: int, path: str) -> faiss.Index:
    """FAISS's ``read_index`` with no single array allowed to exceed the payload itself."""
    with _FAISS_LIMIT_LOCK:
        previous = faiss.get_deserialization_vector_byte_limit()
        faiss.set_deserialization_vector_byte_limit(min(previous, payload_len + 1))
        try:
            # IVF-PQ's precomputed table is not in the file but computed at load, and can be
            # legitimately larger than it: read without it (so the limit can stay tight) and
            # compute it afterwards, under FAISS's own size cap for that table.
            index = faiss.read_index(
                faiss.PyCallbackIOReader(read_payload, _READ_BLOCK),
                faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE,
            )
        except RuntimeError as err:
            if "byte_limit" in str(err):  # the vector, or the inverted lists, limit
                raise ValueError(
                    f"{path} is damaged: an array length inside the index payload exceeds the "
                    f"payload's own {payload_len} bytes"
                ) from None
            raise ValueError(f"{path}: FAISS could not read the index payload: {err}") from None
        except MemoryError:
            raise ValueError(
                f"{path} is damaged: FAISS ran out of memory reading its payload (a forged size)"
            ) from None
        finally:
            faiss.set_deserialization_vector_byte_limit(previous)
    ivf = faiss.try_extract_index_ivf(index)
    ivf = faiss.downcast_index(ivf) if ivf is not None else None
    if isinstance(ivf, faiss.IndexIVFPQ) and ivf.is_trained and ivf.by_residual:
        ivf.precompute_table()
    return index


def json_depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON ``text``, without parsing it (brackets
    inside strings do not count).

    Example:
        >>> json_depth('{"a": [1, [2]], "b": "[["}')
        3
    """
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _parse_header(raw: bytes, path: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: the index header is not valid UTF-8: {err}") from None
    depth = json_depth(text)
    if depth > MAX_HEADER_DEPTH:
        raise ValueError(
            f"{path}: the index header nests {depth} levels deep (at most {MAX_HEADER_DEPTH})"
        )
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, or a 5000-digit number
        raise ValueError(f"{path}: the index header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the index header must be a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: unsupported index format_version {version!r} "
            f"(this metricssl reads version {FORMAT_VERSION})"
        )
    return header


def _read_blocks(f, n_bytes: int):
    while n_bytes > 0:
        block = f.read(min(_READ_BLOCK, n_bytes))
        if not block:
            raise ValueError(f"{f.name} is truncated")
        n_bytes -= len(block)
        yield block


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
