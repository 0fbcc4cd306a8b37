import hashlib
import os
import urllib.error

import pytest

from metricssl.data.download import download_url, file_digest, verify_checksums

PAYLOAD = bytes(range(256)) * 4000  # ~1 MiB: more than one read chunk


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "src" / "payload.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_writes(tmp_path, source):
    dest = tmp_path / "cache" / "deep" / "payload.bin"
    out = download_url(source.as_uri(), dest, md5=MD5, sha256=SHA256, progress=False)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == ["payload.bin"]  # no .part file left
    # either checksum alone is enough, upper-case hex accepted
    download_url(source.as_uri(), dest, sha256=SHA256.upper(), progress=True)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_writes_nothing(tmp_path, source):
    dest = tmp_path / "cache" / "payload.bin"
    with pytest.raises(ValueError, match="checksum"):
        download_url(source.as_uri(), dest, md5="0" * 32, progress=False)
    assert not dest.exists() and os.listdir(dest.parent) == []
    dest.write_bytes(b"previous good file")
    with pytest.raises(ValueError, match="sha256"):
        download_url(source.as_uri(), dest, md5=MD5, sha256="f" * 64, progress=False)
    assert dest.read_bytes() == b"previous good file"  # untouched by the failed download


def test_network_errors_propagate_and_clean_up(tmp_path):
    dest = tmp_path / "payload.bin"
    with pytest.raises(urllib.error.URLError):
        download_url((tmp_path / "missing.bin").as_uri(), dest, md5=MD5, progress=False)
    assert os.listdir(tmp_path) == []


def test_argument_errors(tmp_path, source):
    with pytest.raises(ValueError, match="md5 or sha256"):
        download_url(source.as_uri(), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="32 hex"):
        download_url(source.as_uri(), tmp_path / "x", md5="abc", progress=False)
    with pytest.raises(ValueError, match="url must use"):
        download_url("ftp://example.org/x", tmp_path / "x", md5=MD5)
    with pytest.raises(TypeError, match="url"):
        download_url(b"http://x", tmp_path / "x", md5=MD5)
    with pytest.raises(ValueError, match="timeout"):
        download_url(source.as_uri(), tmp_path / "x", md5=MD5, timeout=0)


def test_verify_checksums_and_file_digest(source):
    assert file_digest(source) == SHA256 and file_digest(source, "md5") == MD5
    verify_checksums(source, md5=MD5, sha256=SHA256)
    with pytest.raises(ValueError, match="corrupt"):
        verify_checksums(source, md5="1" * 32)
    with pytest.raises(ValueError, match="md5 or sha256"):
        verify_checksums(source)


def test_allow_unverified_downloads_without_a_checksum_only_when_asked(tmp_path, source):
    dest = tmp_path / "payload.bin"
    with pytest.raises(ValueError, match="md5 or sha256"):
        download_url(source.as_uri(), dest, progress=False)
    assert download_url(source.as_uri(), dest, progress=False, allow_unverified=True) == dest
    assert dest.read_bytes() == PAYLOAD
    # a checksum that is given is still checked
    with pytest.raises(ValueError, match="checksum"):
        download_url(source.as_uri(), dest, md5="0" * 32, allow_unverified=True, progress=False)
    with pytest.raises(TypeError, match="allow_unverified"):
        download_url(source.as_uri(), dest, allow_unverified="yes", progress=False)
