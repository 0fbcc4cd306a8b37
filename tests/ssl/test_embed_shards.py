"""Sharded embedding: two gloo ranks write what one process writes; an interrupted run resumes
with only its missing parts; a rerun with other settings is refused."""

import os

import numpy as np
import pytest
import torch

import metricssl
from metricssl.data.digits import load_digits
from metricssl.data.image_data import ImageData
from metricssl.index.shards import MANIFEST_NAME, ShardManifest
from metricssl.ssl.embed import embed_dataset, embed_shards, rank_share
from metricssl.ssl.registry import build_method
from tests.gloo import WORLD, run_ranks

N = 101  # odd: the two ranks' shares differ by one
SHARD_ROWS = 20


@pytest.fixture(scope="module")
def digits():
    images, labels = load_digits("test")
    return ImageData(images[:N], labels[:N])


def method_for(digits):
    torch.manual_seed(0)
    return build_method("simclr", digits.input_shape)


def all_rows(manifest):
    ids, rows = zip(*manifest.iter_batches(7))
    return np.concatenate(ids), np.concatenate(rows)


def _rank_worker(rank, folder, results):
    images, labels = load_digits("test")
    data = ImageData(images[:N], labels[:N])
    done = embed_shards(method_for(data), data, folder, shard_rows=SHARD_ROWS, batch_size=16)
    torch.save({"written": done.parts_written, "count": done.manifest.count}, results[rank])


def test_two_ranks_equal_one_process(tmp_path, digits):
    one = embed_shards(method_for(digits), digits, tmp_path / "one", shard_rows=SHARD_ROWS)
    results = [str(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    run_ranks(_rank_worker, tmp_path, str(tmp_path / "two"), results)
    two = ShardManifest.read(tmp_path / "two", verify=True, unique_ids=True)
    # rank 0 holds 0..49 in parts of 20, 20, 10; rank 1 holds 50..100 in 20, 20, 11
    assert [s.path for s in two.shards] == [
        f"part-0000{r}-0000{c}.npy" for r in range(WORLD) for c in range(3)
    ]
    assert [s.count for s in two.shards] == [20, 20, 10, 20, 20, 11]
    for path in results:  # every rank returned the whole set's manifest
        assert torch.load(path) == {"written": 6, "count": N}
    assert one.parts_written == 6 and one.parts_kept == 0
    one_ids, one_rows = all_rows(one.manifest)
    two_ids, two_rows = all_rows(two)
    np.testing.assert_array_equal(one_ids, np.arange(N))
    np.testing.assert_array_equal(two_ids, one_ids)
    np.testing.assert_allclose(two_rows, one_rows, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        one_rows, embed_dataset(method_for(digits), digits).numpy(), rtol=0, atol=1e-6
    )
    labels = np.concatenate([np.load(tmp_path / "two" / s.labels) for s in two.shards])
    np.testing.assert_array_equal(labels, digits.labels.numpy())
    assert two.encoder_sha256 is None and two.dim == one.manifest.dim


def inodes(folder):
    return {p.name: p.stat().st_ino for p in folder.glob("part-*")}


def test_interrupted_run_resumes_with_the_missing_parts(tmp_path, digits):
    folder = tmp_path / "shards"
    method = method_for(digits)
    first = embed_shards(method, digits, folder, shard_rows=SHARD_ROWS, encoder_sha256="ab" * 32)
    complete = all_rows(first.manifest)
    # killed after its fourth part: no manifest, no fifth or sixth part
    (folder / MANIFEST_NAME).unlink()
    for part in first.manifest.shards[4:]:
        for name in (part.path, part.ids, part.labels):
            (folder / name).unlink()
    before = inodes(folder)
    again = embed_shards(method, digits, folder, shard_rows=SHARD_ROWS, encoder_sha256="ab" * 32)
    assert (again.parts_written, again.parts_kept) == (2, 4)
    after = inodes(folder)
    assert {name for name in before if after[name] != before[name]} == set()  # kept untouched
    assert len(after) - len(before) == 2 * 3  # two parts, each embeddings, ids and labels
    assert again.manifest == first.manifest
    assert ShardManifest.read(folder, verify=True) == first.manifest
    np.testing.assert_array_equal(all_rows(again.manifest)[1], complete[1])
    # a complete run reruns without embedding anything
    assert (
        embed_shards(
            method, digits, folder, shard_rows=SHARD_ROWS, encoder_sha256="ab" * 32
        ).parts_written
        == 0
    )


def test_rerun_with_other_settings_is_refused(tmp_path, digits):
    folder = tmp_path / "shards"
    method = method_for(digits)
    embed_shards(method, digits, folder, shard_rows=SHARD_ROWS, encoder_sha256="ab" * 32)
    with pytest.raises(ValueError, match=r"another run \(shard_rows 20 -> 30\)"):
        embed_shards(method, digits, folder, shard_rows=30, encoder_sha256="ab" * 32)
    with pytest.raises(ValueError, match="encoder_sha256 'abab.* -> 'cdcd"):
        embed_shards(method, digits, folder, shard_rows=SHARD_ROWS, encoder_sha256="cd" * 32)


def test_float16_storage(tmp_path, digits):
    method = method_for(digits)
    done = embed_shards(method, digits, tmp_path, shard_rows=64, dtype="float16")
    manifest = ShardManifest.read(tmp_path)
    assert manifest.dtype == "float16" == done.manifest.dtype
    assert np.load(tmp_path / manifest.shards[0].path).dtype == np.float16
    full = embed_dataset(method, digits).numpy()
    np.testing.assert_array_equal(all_rows(manifest)[1], full.astype(np.float16))


def test_float16_overflow_is_refused(tmp_path, digits):
    method = method_for(digits)
    real = method.embed
    method.embed = lambda batch: real(batch) * 1e6  # beyond float16's 65504
    with pytest.raises(ValueError, match="exceed float16's range"):
        embed_shards(method, digits, tmp_path, dtype="float16")
    assert not list(tmp_path.glob("part-*"))
    embed_shards(method, digits, tmp_path / "f32")  # float32 holds them


@pytest.mark.parametrize("damage", ["truncate", "other_ids"])
def test_a_damaged_or_foreign_part_is_refused(tmp_path, digits, damage):
    method = method_for(digits)
    embed_shards(method, digits, tmp_path, shard_rows=SHARD_ROWS)
    (tmp_path / MANIFEST_NAME).unlink()
    if damage == "truncate":
        victim = tmp_path / "part-00000-00001.npy"
        victim.write_bytes(victim.read_bytes()[:-4])
        message = "part-00000-00001.npy: the file is truncated"
    else:
        np.save(tmp_path / "part-00000-00001.ids.npy", np.arange(SHARD_ROWS) + 1000)
        message = "holds other ids than this run's part part-00000-00001"
    with pytest.raises(ValueError, match=f"{message}.*damaged part or one of another run"):
        embed_shards(method, digits, tmp_path, shard_rows=SHARD_ROWS)


def test_unlabelled_images_and_the_package_top(tmp_path, digits):
    images = digits.images[:30]
    done = metricssl.embed_shards(method_for(digits), images, tmp_path, shard_rows=SHARD_ROWS)
    assert [s.labels for s in done.manifest.shards] == [None, None]
    assert not ShardManifest.read(tmp_path).labelled


def test_rank_shares_cover_every_item_once():
    for n in (0, 1, 7, 100, 101):
        for world in (1, 2, 3, 8):
            shares = [rank_share(n, r, world) for r in range(world)]
            assert [i for share in shares for i in share] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_bad_arguments(tmp_path, digits):
    method = method_for(digits)
    with pytest.raises(ValueError, match="shard_rows must be >= 1"):
        embed_shards(method, digits, tmp_path, shard_rows=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        embed_shards(method, digits, tmp_path, dtype="float64")
    with pytest.raises(TypeError, match="folder"):
        embed_shards(method, digits, None)
    with pytest.raises(ValueError, match="images is empty"):
        embed_shards(method, digits.images[:0], tmp_path)
    stream = ImageData(None, None, stream=[(digits.images[:4], None)], steps=1, batch_size=4)
    with pytest.raises(ValueError, match="images is a stream"):
        embed_shards(method, stream, tmp_path)
    assert not os.listdir(tmp_path)  # nothing written before the arguments were checked
