"""Download a file with a progress bar, verify its checksum, and only then put it in place.

The file is streamed to a temporary name in the destination folder and renamed over the
destination once its MD5/SHA-256 match, so an interrupted or corrupted download never leaves
a file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
import urllib.request
from pathlib import Path

from ..core.atomic import atomic_write
from ..core.digest import file_digest as file_digest  # re-exported: the data layer's path
from ..core.digest import file_digests

_CHUNK = 1 << 20
_SCHEMES = ("http", "https", "file")


def _check_expected(md5: str | None, sha256: str | None) -> None:
    if md5 is None and sha256 is None:
        raise ValueError("give md5 or sha256: a download is only trusted after a checksum")
    for name, value, length in (("md5", md5, 32), ("sha256", sha256, 64)):
        if value is not None and (
            not isinstance(value, str)
            or len(value) != length
            or any(c not in "0123456789abcdef" for c in value.lower())
        ):
            raise ValueError(f"{name} must be {length} hex digits, got {value!r}")


def _mismatches(digests: dict[str, str], md5: str | None, sha256: str | None) -> list[str]:
    wrong = []
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected is not None and digests[name] != expected.lower():
            wrong.append(f"{name} {digests[name]} (expected {expected.lower()})")
    return wrong


def verify_checksums(
    path: str | os.PathLike, md5: str | None = None, sha256: str | None = None
) -> None:
    """Raise ValueError unless the file at ``path`` has the given MD5 and/or SHA-256."""
    _check_expected(md5, sha256)
    digests = file_digests(path, tuple(n for n, v in (("md5", md5), ("sha256", sha256)) if v))
    wrong = _mismatches(digests, md5, sha256)
    if wrong:
        raise ValueError(f"{path} is corrupt or not the expected file: " + "; ".join(wrong))


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    allow_unverified: bool = False,
) -> Path:
    """Download ``url`` to ``dest`` and check its MD5 and/or SHA-256 before keeping it.

    Args:
        url: an http(s) or file URL.
        dest: the final file path; its folder is created.
        md5, sha256: expected hex digests; at least one is required (see allow_unverified).
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.
        allow_unverified: accept neither md5 nor sha256, for a file whose publisher gives no
            checksum; the caller must then check the content itself (an archive's own CRCs,
            the files it must hold).

    Returns:
        ``dest`` as a Path. On a checksum mismatch nothing is written and ValueError is raised;
        network failures raise ``urllib.error.URLError`` (or OSError).

    Example:
        >>> from metricssl.data.download import download_url
        >>> download_url("https://example.org/file.gz", "/tmp/file.gz", md5="...")  # doctest: +SKIP
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise ValueError(f"url must use one of {_SCHEMES}, got {url!r}")
    if not isinstance(allow_unverified, bool):
        raise TypeError(f"allow_unverified must be a bool, got {allow_unverified!r}")
    if not (allow_unverified and md5 is None and sha256 is None):
        _check_expected(md5, sha256)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number, got {timeout!r}")
    from tqdm.auto import tqdm

    dest = Path(dest)
    hashers = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    # The checksum is checked inside the atomic write: a bad download never replaces ``dest``.
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=dest.name,
            disable=not progress,
            leave=False,
        ) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                for h in hashers.values():
                    h.update(block)
                bar.update(len(block))
        wrong = _mismatches({name: h.hexdigest() for name, h in hashers.items()}, md5, sha256)
        if wrong:
            raise ValueError(f"download of {url} failed its checksum: " + "; ".join(wrong))
    return dest
