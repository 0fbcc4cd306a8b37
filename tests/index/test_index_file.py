import json
import os
import struct

import faiss
import numpy as np
import pytest

from metricssl.index import index_file
from metricssl.index.index_file import MAGIC, read_index_file, write_index_file


@pytest.fixture
def flat():
    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32))
    return index


def test_round_trip(tmp_path, flat):
    path = tmp_path / "a.index"
    write_index_file(path, {"kind": "flat", "note": "é"}, flat)
    header, index = read_index_file(path)
    assert header == {"format_version": 1, "kind": "flat", "note": "é"}
    assert index.ntotal == 20 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    q = np.ones((1, 8), np.float32)
    np.testing.assert_array_equal(index.search(q, 5)[1], flat.search(q, 5)[1])
    assert path.read_bytes().startswith(MAGIC)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, flat, monkeypatch):
    path = tmp_path / "a.index"
    write_index_file(path, {"v": 1}, flat)
    before = path.read_bytes()

    def broken_write_index(index, writer):
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_file.faiss, "write_index", broken_write_index)
    with pytest.raises(RuntimeError, match="disk full"):
        write_index_file(path, {"v": 2}, flat)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.index"]


def test_every_truncation_is_refused(tmp_path, flat):
    path = tmp_path / "a.index"
    write_index_file(path, {}, flat)
    data = path.read_bytes()
    for cut in range(0, len(data), 7):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|not a metricssl"):
            read_index_file(path)


def test_corruption_and_foreign_files(tmp_path, flat):
    path = tmp_path / "a.index"
    write_index_file(path, {}, flat)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 12] ^= 1  # inside the header
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        read_index_file(path)
    path.write_bytes(b"\x80\x04\x95" + b"pickle-looking bytes" * 10)
    with pytest.raises(ValueError, match="not a metricssl index"):
        read_index_file(path)
    # Right magic, lengths that do not add up.
    path.write_bytes(MAGIC + b"\xff" * 80)
    with pytest.raises(ValueError, match="damaged"):
        read_index_file(path)


def _container(header_bytes: bytes, payload: bytes) -> bytes:
    import hashlib
    import struct

    u64 = struct.Struct("<Q")
    digest = hashlib.sha256(header_bytes + payload).digest()
    return (
        MAGIC
        + u64.pack(len(header_bytes))
        + header_bytes
        + payload
        + u64.pack(len(payload))
        + digest
        + index_file.END_MAGIC
    )


def test_bad_header_or_payload_with_a_valid_checksum(tmp_path, flat):
    payload = faiss.serialize_index(flat).tobytes()
    path = tmp_path / "a.index"
    cases = {
        b"not json": "not valid JSON",
        b"[1, 2]": "JSON object",
        json.dumps({"format_version": 99}).encode(): "unsupported index format_version 99",
    }
    for header, match in cases.items():
        path.write_bytes(_container(header, payload))
        with pytest.raises(ValueError, match=match):
            read_index_file(path)
    good_header = json.dumps({"format_version": 1}).encode()
    path.write_bytes(_container(good_header, b"garbage payload bytes"))
    with pytest.raises(ValueError, match="FAISS could not read"):
        read_index_file(path)
    path.write_bytes(_container(good_header, payload + b"extra"))
    with pytest.raises(ValueError, match="unread trailing bytes"):
        read_index_file(path)
    path.write_bytes(_container(good_header, payload))
    assert read_index_file(path)[1].ntotal == 20


# ---------------------------------------------------------------- crafted files
# Each file below has a valid checksum: only the length checks stand between it and a huge
# allocation (or, for the header, a 500k-deep recursion in json.loads).

U64 = struct.Struct("<Q")
GOOD_HEADER = json.dumps({"format_version": 1}).encode()


def _forged(payload: bytes, marker: bytes, offset: int, expected: int, value: int) -> bytes:
    """``payload`` with the little-endian u64 at ``offset`` bytes after ``marker`` (which must
    hold ``expected``) replaced by ``value``."""
    at = payload.index(marker) + offset
    assert U64.unpack(payload[at : at + 8])[0] == expected
    return payload[:at] + U64.pack(value) + payload[at + 8 :]


def test_forged_array_length_in_the_payload_is_refused_before_allocating(tmp_path, flat):
    # IndexFlat's vector array: fourcc, d (4), ntotal (8), 2 x dummy (8), is_trained (1),
    # metric (4), then its length in floats. 2**36 floats are 256 GiB; FAISS's own limit is 1 TiB.
    payload = faiss.serialize_index(flat).tobytes()
    forged = _forged(payload, b"IxFI", 37, 20 * 8, 2**36)
    path = tmp_path / "a.index"
    path.write_bytes(_container(GOOD_HEADER, forged))
    with pytest.raises(ValueError, match="array length inside the index payload exceeds"):
        read_index_file(path)
    assert faiss.get_deserialization_vector_byte_limit() == 1 << 40  # restored


def test_forged_inverted_list_code_size_is_refused_before_allocating(tmp_path):
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    ivf = faiss.index_factory(8, "IVF4,Flat")
    ivf.train(x)
    ivf.add(x)
    payload = faiss.serialize_index(ivf).tobytes()
    # ArrayInvertedLists: "ilar", nlist, code_size: each list's codes are sized from it.
    forged = _forged(payload, b"ilar", 12, 32, 2**31)  # ~100 GiB a list, under 1 TiB
    path = tmp_path / "a.index"
    path.write_bytes(_container(GOOD_HEADER, forged))
    with pytest.raises(ValueError, match="array length inside the index payload exceeds"):
        read_index_file(path)


def test_deeply_nested_header_is_refused_before_parsing(tmp_path, flat):
    payload = faiss.serialize_index(flat).tobytes()
    path = tmp_path / "a.index"
    for header in (b"[" * 500_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        path.write_bytes(_container(header, payload))
        with pytest.raises(ValueError, match="nests .* levels deep"):
            read_index_file(path)
    # Brackets inside strings are text, not nesting.
    header = json.dumps({"format_version": 1, "note": "[" * 1000}).encode()
    path.write_bytes(_container(header, payload))
    assert read_index_file(path)[0]["note"] == "[" * 1000


def test_header_with_a_huge_number_is_a_value_error(tmp_path, flat):
    path = tmp_path / "a.index"
    payload = faiss.serialize_index(flat).tobytes()
    path.write_bytes(_container(b'{"format_version": ' + b"9" * 5000 + b"}", payload))
    with pytest.raises(ValueError, match="not valid JSON"):
        read_index_file(path)


def test_forged_header_and_payload_lengths(tmp_path, flat):
    path = tmp_path / "a.index"
    write_index_file(path, {}, flat)
    data = path.read_bytes()
    start, trailer = len(MAGIC), len(data) - index_file._TRAILER_BYTES
    cases = {
        "header length .* exceeds": data[:start] + U64.pack(2**62) + data[start + 8 :],
        "lengths do not add up": data[:trailer] + U64.pack(2**62) + data[trailer + 8 :],
    }
    for match, forged in cases.items():
        path.write_bytes(forged)
        with pytest.raises(ValueError, match=match):
            read_index_file(path)
