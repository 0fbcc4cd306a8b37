"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.), plain or gzipped.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values, big-endian, in C order. Everything is checked, so a truncated
or corrupted file raises ValueError instead of yielding a wrong array.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The uncompressed bytes of an IDX file; ``.gz`` files are decompressed (CRC checked)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a valid gzip file: {err}") from err


def parse_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into a native-endian numpy array, checking header and length."""
    if len(data) < 4:
        raise ValueError(f"{source}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{source}: bad IDX magic number {data[:4].hex()} (must start with two zero bytes)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise ValueError(f"{source}: unknown IDX type code 0x{type_code:02x}")
    if ndim == 0:
        raise ValueError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{source}: {what}: shape {shape} of {dtype.name} needs {expected} bytes, "
            f"file has {len(data)}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # A native-endian, writable copy (frombuffer over bytes is read-only).
    return values.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) into a numpy array.

    Example:
        >>> from metricssl.data.idx import read_idx
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels.dtype
        ((10000,), dtype('uint8'))
    """
    return parse_idx(read_idx_bytes(path), source=str(path))
