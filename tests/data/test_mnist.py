import dataclasses
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from metricssl.data import mnist
from metricssl.data.cache import CACHE_ENV_VAR
from metricssl.data.mnist import IdxFile, load_fashion_mnist, load_mnist

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    dims = b"".join(struct.pack(">I", d) for d in array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes()


def small_split(n=12, seed=0, n_classes=10):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % n_classes).astype(np.uint8)
    return images, labels


def write_split(folder: Path, split="train", gz=True, images=None, labels=None):
    """Write one split as IDX files; return {file name: (md5, sha256) of what was written}."""
    if images is None:
        images, labels = small_split()
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, array in zip(NAMES[split], (images, labels)):
        data = idx_bytes(array)
        if gz:
            data = gzip.compress(data, mtime=0)
        (folder / (name + (".gz" if gz else ""))).write_bytes(data)
        digests[name] = (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    return digests


def patched_spec(base, digests, mirrors=(), system_dirs=()):
    """``base`` with the test files' archive digests (and no content digests)."""
    splits = {
        split: tuple(IdxFile(f.name, *digests.get(f.name, (f.md5, f.sha256))) for f in files)
        for split, files in base.splits.items()
    }
    return dataclasses.replace(base, splits=splits, mirrors=mirrors, system_dirs=system_dirs)


@pytest.mark.skipif(
    not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist absent"
)
def test_real_debian_fashion_mnist(tmp_path):
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = load_fashion_mnist(split=split, cache_dir=tmp_path)  # verified
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert labels.bincount().tolist() == [n // 10] * 10
        assert images.float().mean().item() == pytest.approx(72.9, abs=1.0)


def test_root_files_are_checked_against_the_published_content(tmp_path):
    images, labels = small_split()
    write_split(tmp_path, images=images, labels=labels)
    with pytest.raises(ValueError, match="content SHA-256"):
        load_fashion_mnist(root=tmp_path, cache_dir=tmp_path / "cache")
    # root comes first in the search order, before Debian's copy
    x, y = load_fashion_mnist(root=tmp_path, cache_dir=tmp_path / "cache", verify=False)
    np.testing.assert_array_equal(x[:, 0].numpy(), images)
    np.testing.assert_array_equal(y.numpy(), labels)


def test_uncompressed_mnist_in_root(tmp_path):
    images, labels = small_split(n=7)
    write_split(tmp_path, split="test", gz=False, images=images, labels=labels)
    x, y = load_mnist(root=str(tmp_path), split="test", cache_dir=tmp_path / "c")
    assert x.shape == (7, 1, 28, 28) and x.is_contiguous()
    np.testing.assert_array_equal(x[:, 0].numpy(), images)
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_gz_mnist_must_match_the_published_archive(tmp_path, monkeypatch):
    digests = write_split(tmp_path)
    with pytest.raises(ValueError, match="not the expected file"):
        load_mnist(root=tmp_path, cache_dir=tmp_path / "c")
    monkeypatch.setattr(mnist, "MNIST", patched_spec(mnist.MNIST, digests))
    assert load_mnist(root=tmp_path, cache_dir=tmp_path / "c")[0].shape == (12, 1, 28, 28)


def test_download_tries_mirrors_then_uses_the_cache(tmp_path, monkeypatch):
    server = tmp_path / "server"
    digests = write_split(server, split="test")
    mirrors = ((tmp_path / "offline").as_uri() + "/", server.as_uri() + "/")
    monkeypatch.setattr(mnist, "MNIST", patched_spec(mnist.MNIST, digests, mirrors))
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_mnist(split="test", cache_dir=cache)
    x, y = load_mnist(split="test", download=True, cache_dir=cache, progress=False)
    assert x.shape == (12, 1, 28, 28)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES["test"])
    for f in server.iterdir():
        f.unlink()
    x2, y2 = load_mnist(split="test", download=True, cache_dir=cache)  # no network needed
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_download_with_bad_checksums_fails_cleanly(tmp_path, monkeypatch):
    server = tmp_path / "server"
    write_split(server)
    spec = dataclasses.replace(mnist.MNIST, mirrors=(server.as_uri() + "/",))
    monkeypatch.setattr(mnist, "MNIST", spec)  # real published digests: test files differ
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="checksum"):
        load_mnist(download=True, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_cache_env_var(tmp_path, monkeypatch):
    digests = write_split(tmp_path / "env" / "mnist")
    monkeypatch.setattr(mnist, "MNIST", patched_spec(mnist.MNIST, digests))
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "env"))
    assert load_mnist()[1].shape == (12,)


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (np.zeros((4, 28, 28)), np.array([0, 1, 2, 10]), "outside 0..9"),
        (np.zeros((4, 28, 28)), np.array([0, 1, 2]), "4 images but"),
        (np.zeros((4, 27, 28)), np.array([0, 1, 2, 3]), r"shape \(N, 28, 28\)"),
        (np.zeros(4), np.array([0, 1, 2, 3]), r"shape \(N, 28, 28\)"),
        (np.zeros((4, 28, 28)), np.zeros((4, 1)), "1D uint8 label"),
    ],
)
def test_structural_errors(tmp_path, images, labels, match):
    write_split(tmp_path, gz=False, images=images, labels=labels)
    with pytest.raises(ValueError, match=match):
        load_mnist(root=tmp_path, cache_dir=tmp_path / "c")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_mnist(split="val")
    with pytest.raises(TypeError, match="download"):
        load_mnist(download="yes")
    with pytest.raises(TypeError, match="root"):
        load_fashion_mnist(root=3)
    with pytest.raises(TypeError, match="verify"):
        load_mnist(root=tmp_path, verify=None)
