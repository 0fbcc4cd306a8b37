import dataclasses
import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from metricssl.data import cifar
from metricssl.data.cifar import load_cifar10, load_cifar100


def batch_bytes(n, seed, label_keys=("labels",), n_classes=(10,), bytes_keys=False):
    rng = np.random.default_rng(seed)
    entry = {
        "batch_label": f"batch {seed}",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
    }
    for key, k in zip(label_keys, n_classes):
        entry[key] = rng.integers(0, k, n).tolist()
    entry["filenames"] = [f"img_{i}.png" for i in range(n)]
    stored = {k.encode(): v for k, v in entry.items()} if bytes_keys else entry
    return pickle.dumps(stored, protocol=4), entry


def make_cifar10(folder: Path, bytes_keys=False):
    """Small CIFAR-10 batches; returns {batch name: (raw bytes, entry)}."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: batch_bytes(3 + i, seed=i, bytes_keys=bytes_keys) for i, name in enumerate(names)}


def write_folder(folder: Path, batches):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (raw, _) in batches.items():
        (folder / name).write_bytes(raw)


def write_archive(path: Path, top: str, batches) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, (raw, _) in batches.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return hashlib.md5(path.read_bytes()).hexdigest()


def spec_for(base, batches, archive_md5=None, url=None):
    splits = {
        split: tuple((name, hashlib.md5(batches[name][0]).hexdigest()) for name, _ in files)
        for split, files in base.splits.items()
    }
    return dataclasses.replace(
        base, splits=splits, archive_md5=archive_md5 or base.archive_md5, url=url or base.url
    )


def expected(batches, names, key="labels"):
    data = np.concatenate([batches[n][1]["data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([batches[n][1][key] for n in names])
    return data, labels


TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def test_extracted_folder_in_root(tmp_path, monkeypatch):
    batches = make_cifar10(tmp_path)
    write_folder(tmp_path / "cifar-10-batches-py", batches)
    monkeypatch.setattr(cifar, "CIFAR10", spec_for(cifar.CIFAR10, batches))
    images, labels = load_cifar10(root=tmp_path, cache_dir=tmp_path / "c")
    data, y = expected(batches, TRAIN)
    assert images.shape == (25, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    np.testing.assert_array_equal(images.numpy(), data)
    np.testing.assert_array_equal(labels.numpy(), y)
    # row layout: 1024 red, then green, then blue values
    np.testing.assert_array_equal(
        images[0, 1].flatten().numpy(), data.reshape(25, 3072)[0, 1024:2048]
    )
    # root may also be the extracted folder itself
    test_images, _ = load_cifar10(root=tmp_path / "cifar-10-batches-py", split="test")
    assert test_images.shape == (8, 3, 32, 32)


def test_archive_is_checked_then_read_in_place(tmp_path, monkeypatch):
    batches = make_cifar10(tmp_path, bytes_keys=True)
    md5 = write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", batches)
    with pytest.raises(ValueError, match="not the expected file"):  # published MD5 differs
        load_cifar10(root=tmp_path, cache_dir=tmp_path / "c")
    images, labels = load_cifar10(
        root=tmp_path, split="test", cache_dir=tmp_path / "c", verify=False
    )
    np.testing.assert_array_equal(images.numpy(), expected(batches, ["test_batch"])[0])
    monkeypatch.setattr(cifar, "CIFAR10", spec_for(cifar.CIFAR10, batches, archive_md5=md5))
    images, labels = load_cifar10(root=tmp_path)
    np.testing.assert_array_equal(labels.numpy(), expected(batches, TRAIN)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cifar-10-python.tar.gz"
    ]  # nothing extracted


def test_download_into_cache(tmp_path, monkeypatch):
    batches = make_cifar10(tmp_path)
    server = tmp_path / "server" / "cifar-10-python.tar.gz"
    md5 = write_archive(server, "cifar-10-batches-py", batches)
    spec = spec_for(cifar.CIFAR10, batches, archive_md5=md5, url=server.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10", spec)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_cifar10(split="test", cache_dir=cache)
    images, _ = load_cifar10(split="test", download=True, cache_dir=cache, progress=False)
    assert images.shape == (8, 3, 32, 32)
    assert (cache / "cifar-10-python.tar.gz").is_file()
    server.unlink()
    assert load_cifar10(split="test", download=True, cache_dir=cache)[0].shape == (8, 3, 32, 32)


def test_failed_download(tmp_path, monkeypatch):
    spec = dataclasses.replace(cifar.CIFAR10, url=(tmp_path / "absent.tar.gz").as_uri())
    monkeypatch.setattr(cifar, "CIFAR10", spec)
    with pytest.raises(RuntimeError, match="could not download"):
        load_cifar10(download=True, cache_dir=tmp_path / "cache", progress=False)


def test_cifar100_fine_and_coarse(tmp_path, monkeypatch):
    keys, sizes = ("fine_labels", "coarse_labels"), (100, 20)
    batches = {
        "train": batch_bytes(6, 1, keys, sizes),
        "test": batch_bytes(4, 2, keys, sizes),
    }
    write_folder(tmp_path / "cifar-100-python", batches)
    monkeypatch.setattr(cifar, "CIFAR100", spec_for(cifar.CIFAR100, batches))
    _, fine = load_cifar100(root=tmp_path, cache_dir=tmp_path / "c")
    _, coarse = load_cifar100(root=tmp_path, split="test", label_mode="coarse")
    assert fine.tolist() == batches["train"][1]["fine_labels"]
    assert coarse.tolist() == batches["test"][1]["coarse_labels"]
    with pytest.raises(ValueError, match="label_mode"):
        load_cifar100(root=tmp_path, label_mode="medium")


class Touch:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_tampered_batch_never_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    batches = make_cifar10(tmp_path)
    evil = pickle.dumps({"data": Touch(marker), "labels": []})
    batches["test_batch"] = (evil, None)
    write_folder(tmp_path / "cifar-10-batches-py", batches)
    # even with matching checksums (an attacker controls both), nothing runs
    monkeypatch.setattr(cifar, "CIFAR10", spec_for(cifar.CIFAR10, batches))
    with pytest.raises(ValueError, match="refusing"):
        load_cifar10(root=tmp_path, split="test")
    assert not marker.exists()


def test_corrupt_batches(tmp_path, monkeypatch):
    batches = make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    write_folder(folder, batches)
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="published MD5"):
        load_cifar10(root=tmp_path, split="test")
    with pytest.raises(ValueError, match="not a valid CIFAR batch"):
        load_cifar10(root=tmp_path, split="test", verify=False)
    bad = {
        "data": np.zeros((2, 100), np.uint8),
        "labels": [0, 1],
    }
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"shape \(N, 3072\)"):
        load_cifar10(root=tmp_path, split="test", verify=False)
    bad = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="expected 0..9"):
        load_cifar10(root=tmp_path, split="test", verify=False)
    bad = {"data": np.zeros((2, 3072), np.uint8), "labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="2 images"):
        load_cifar10(root=tmp_path, split="test", verify=False)
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="must be a dict"):
        load_cifar10(root=tmp_path, split="test", verify=False)


def test_archive_missing_members_or_broken(tmp_path):
    batches = make_cifar10(tmp_path)
    del batches["data_batch_3"]
    write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", batches)
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(root=tmp_path, verify=False)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(ValueError, match="readable"):
        load_cifar10(root=tmp_path, verify=False)


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_cifar10(split="valid")
    with pytest.raises(TypeError, match="verify"):
        load_cifar10(verify=1)
    with pytest.raises(TypeError, match="root"):
        load_cifar100(root=1.5)
