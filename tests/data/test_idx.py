import gzip
import struct

import numpy as np
import pytest

from metricssl.data.idx import IDX_DTYPES, parse_idx, read_idx

CODES = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}


def idx_bytes(array: np.ndarray) -> bytes:
    code = CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5)])
def test_round_trip_every_type(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=shape) * 50).astype(dtype)
    plain = tmp_path / "a-idx"
    plain.write_bytes(idx_bytes(array))
    packed = tmp_path / "a-idx.gz"
    packed.write_bytes(gzip.compress(idx_bytes(array)))
    for path in (plain, packed, str(plain)):
        out = read_idx(path)
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative
        np.testing.assert_array_equal(out, array)
        out[...] = 0  # writable


def test_header_errors():
    good = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))
    with pytest.raises(ValueError, match="too short"):
        parse_idx(b"\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(ValueError, match="type code 0x0a"):
        parse_idx(good[:2] + b"\x0a" + good[3:])
    with pytest.raises(ValueError, match="0 dimensions"):
        parse_idx(b"\x00\x00\x08\x00")
    with pytest.raises(ValueError, match="truncated IDX header"):
        parse_idx(good[:9])


def test_length_errors():
    good = idx_bytes(np.arange(24, dtype=np.int32).reshape(2, 3, 4))
    with pytest.raises(ValueError, match="truncated"):
        parse_idx(good[:-1])
    with pytest.raises(ValueError, match="trailing"):
        parse_idx(good + b"\x00")


def test_corrupt_and_truncated_gzip(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 7)))
    truncated = tmp_path / "t.gz"
    truncated.write_bytes(bytes(packed[: len(packed) // 2]))
    with pytest.raises(ValueError, match="gzip"):
        read_idx(truncated)
    packed[-5] ^= 0xFF  # damage the CRC-32 / size trailer
    damaged = tmp_path / "d.gz"
    damaged.write_bytes(bytes(packed))
    with pytest.raises(ValueError, match="gzip"):
        read_idx(damaged)
    not_gzip = tmp_path / "n.gz"
    not_gzip.write_bytes(b"plain text, not gzip")
    with pytest.raises(ValueError, match="gzip"):
        read_idx(not_gzip)
