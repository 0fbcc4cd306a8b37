"""The shard format: writing parts, reading and checking a manifest, batches and samples."""

import json

import numpy as np
import pytest

from metricssl.core.digest import file_digest
from metricssl.index.shards import (
    MANIFEST_NAME,
    ShardManifest,
    part_stem,
    write_shard,
)


def make_set(folder, counts=(5, 0, 7), dim=4, dtype="float32", labels=True, seed=0):
    """A shard set of ``counts`` rows per part; returns (manifest, ids, float32 rows)."""
    rng = np.random.default_rng(seed)
    shards, all_ids, all_rows, start = [], [], [], 0
    for chunk, count in enumerate(counts):
        rows = rng.standard_normal((count, dim)).astype(dtype)
        ids = np.arange(start, start + count) * 3 + 1  # global ids that are not row numbers
        part_labels = ids % 5 if labels else None
        shards.append(write_shard(folder, part_stem(chunk % 2, chunk), rows, ids, part_labels))
        all_ids.append(ids)
        all_rows.append(rows.astype(np.float32))
        start += count
    manifest = ShardManifest(folder, dim, dtype, start, "ab" * 32, shards)
    manifest.write()
    return manifest, np.concatenate(all_ids), np.concatenate(all_rows)


def edit_manifest(folder, change):
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_and_batches(tmp_path, dtype):
    written, ids, rows = make_set(tmp_path, dtype=dtype)
    manifest = ShardManifest.read(tmp_path, verify=True, unique_ids=True)
    assert manifest == written
    assert manifest.labelled
    assert np.load(tmp_path / manifest.shards[0].path).dtype == np.dtype(dtype)
    batches = list(manifest.iter_batches(3))
    assert [len(b_ids) for b_ids, _ in batches] == [3, 2, 3, 3, 1]  # never across parts
    assert all(x.dtype == np.float32 and b.dtype == np.int64 for b, x in batches)
    np.testing.assert_array_equal(np.concatenate([b for b, _ in batches]), ids)
    np.testing.assert_array_equal(np.concatenate([x for _, x in batches]), rows)
    # the manifest's path is accepted too
    assert ShardManifest.read(tmp_path / MANIFEST_NAME) == written


def test_manifest_json_is_the_documented_format(tmp_path):
    make_set(tmp_path, counts=(2,), labels=False)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    part = "part-00000-00000"
    assert data == {
        "format": "metricssl-shards",
        "version": 1,
        "dim": 4,
        "dtype": "float32",
        "count": 2,
        "encoder_sha256": "ab" * 32,
        "shards": [
            {
                "path": f"{part}.npy",
                "ids": f"{part}.ids.npy",
                "labels": None,
                "count": 2,
                "sha256": file_digest(tmp_path / f"{part}.npy"),
            }
        ],
    }


def test_sample_draws_distinct_rows_reproducibly(tmp_path):
    _, ids, rows = make_set(tmp_path, counts=(6, 0, 9, 4))
    manifest = ShardManifest.read(tmp_path)
    sample_ids, sample_rows = manifest.sample(8, seed=3)
    assert len(np.unique(sample_ids)) == 8
    assert np.all(np.diff(sample_ids) > 0)  # manifest order
    positions = np.searchsorted(ids, sample_ids)
    np.testing.assert_array_equal(sample_rows, rows[positions])
    again = manifest.sample(8, seed=3)
    np.testing.assert_array_equal(again[0], sample_ids)
    assert not np.array_equal(manifest.sample(8, seed=4)[0], sample_ids)
    all_ids, all_rows = manifest.sample(100)  # more than there are: every row once
    np.testing.assert_array_equal(all_ids, ids)
    np.testing.assert_array_equal(all_rows, rows)


def test_missing_shard_file_is_named(tmp_path):
    manifest, _, _ = make_set(tmp_path)
    (tmp_path / manifest.shards[2].path).unlink()
    with pytest.raises(FileNotFoundError, match="part-00000-00002.npy"):
        ShardManifest.read(tmp_path)


@pytest.mark.parametrize("which", ["path", "ids", "labels"])
def test_truncated_shard_file_is_named(tmp_path, which):
    manifest, _, _ = make_set(tmp_path)
    victim = tmp_path / getattr(manifest.shards[0], which)
    victim.write_bytes(victim.read_bytes()[:-3])
    with pytest.raises(ValueError, match=f"{victim.name}.*truncated"):
        ShardManifest.read(tmp_path)


def test_file_longer_than_its_header_says(tmp_path):
    manifest, _, _ = make_set(tmp_path)
    victim = tmp_path / manifest.shards[0].path
    victim.write_bytes(victim.read_bytes() + b"\0" * 4)
    with pytest.raises(ValueError, match="longer than its header"):
        ShardManifest.read(tmp_path)


def test_shape_or_dtype_that_disagrees_with_the_manifest(tmp_path):
    make_set(tmp_path, counts=(5,))
    np.save(tmp_path / "part-00000-00000.npy", np.zeros((5, 4), "f2"))
    with pytest.raises(ValueError, match="part-00000-00000.npy.*float16.*expected float32"):
        ShardManifest.read(tmp_path)
    np.save(tmp_path / "part-00000-00000.npy", np.zeros((4, 4), "f4"))
    with pytest.raises(ValueError, match=r"\(4, 4\).*expected float32 \(5, 4\)"):
        ShardManifest.read(tmp_path)


def test_not_an_npy_file(tmp_path):
    make_set(tmp_path, counts=(5,))
    (tmp_path / "part-00000-00000.ids.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="ids.npy: not a readable .npy"):
        ShardManifest.read(tmp_path)


def test_verify_catches_changed_bytes(tmp_path):
    manifest, _, _ = make_set(tmp_path, counts=(5,))
    victim = tmp_path / manifest.shards[0].path
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    ShardManifest.read(tmp_path)  # header and size are fine
    with pytest.raises(ValueError, match="SHA-256 differs"):
        ShardManifest.read(tmp_path, verify=True)


def test_duplicate_ids_found_on_request(tmp_path):
    manifest_shards = tuple(
        write_shard(tmp_path, part_stem(r, 0), np.zeros((2, 3), "f4"), ids)
        for r, ids in enumerate(([0, 1], [1, 2]))
    )
    ShardManifest(tmp_path, 3, "float32", 4, None, manifest_shards).write()
    ShardManifest.read(tmp_path)
    with pytest.raises(ValueError, match=r"ids appear in more than one row, e.g. \[1\]"):
        ShardManifest.read(tmp_path, unique_ids=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="other"), "not a 'metricssl-shards' manifest"),
        (lambda d: d.update(version=2), "version 2, this metricssl reads version 1"),
        (lambda d: d.update(dim=0), "dim must be a positive integer"),
        (lambda d: d.update(dtype="float64"), "dtype must be one of"),
        (lambda d: d.update(count=11), "count is 11 but the shards hold 12 rows"),
        (lambda d: d.update(encoder_sha256=5), "encoder_sha256 must be a string or null"),
        (lambda d: d["shards"][0].update(path="../x.npy"), r"shards\[0\].path must be a .npy"),
        (lambda d: d["shards"][1].update(ids=d["shards"][0]["ids"]), "no other entry names"),
        (lambda d: d["shards"][0].update(labels=None), "some shards have labels and others"),
        (lambda d: d["shards"][0].update(sha256="x"), "64 lowercase hex"),
        (lambda d: d["shards"][0].pop("count"), r"shards\[0\] must be an object with the keys"),
        (lambda d: d["shards"][0].update(count=-1), r"shards\[0\].count must be an integer"),
    ],
)
def test_bad_manifest_fields(tmp_path, change, message):
    make_set(tmp_path)
    edit_manifest(tmp_path, change)
    with pytest.raises(ValueError, match=message):
        ShardManifest.read(tmp_path)


def test_no_manifest_or_not_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shard manifest"):
        ShardManifest.read(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON shard manifest"):
        ShardManifest.read(tmp_path)


def test_bad_arguments(tmp_path):
    make_set(tmp_path)
    with pytest.raises(TypeError, match="folder"):
        ShardManifest.read(3)
    with pytest.raises(TypeError, match="verify"):
        ShardManifest.read(tmp_path, verify="yes")
    manifest = ShardManifest.read(tmp_path)
    with pytest.raises(ValueError, match="rows must be >= 1"):
        next(manifest.iter_batches(0))
    with pytest.raises(ValueError, match="n must be >= 1"):
        manifest.sample(0)
    with pytest.raises(ValueError, match="embeddings must be a 2D float32 or float16"):
        write_shard(tmp_path, "x", np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match=r"ids must be an integer array of shape \(2,\)"):
        write_shard(tmp_path, "x", np.zeros((2, 3), "f4"), [0.5, 1.0])
