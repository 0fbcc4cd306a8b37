import json
import os

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
    with pytest.raises(ValueError, match="truncated or damaged"):
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
