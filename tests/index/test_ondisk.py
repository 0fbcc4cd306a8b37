"""On-disk IVF indexes built from shards, and search over several indexes."""

from __future__ import annotations

import json
import os
import shutil
import socket

import faiss
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from metricssl.index import EmbeddingIndex
from metricssl.index.index_kinds import stored_ids
from metricssl.index.ondisk import (
    LISTS_FILE,
    OnDiskSettings,
    add_part,
    build_ondisk,
    merge_parts,
    merge_top_k,
    open_ondisk,
    search_shards,
    train_ondisk,
)
from metricssl.index.shards import ShardManifest, part_stem, write_shard

N, DIM, SHARDS = 20_000, 32, 4


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, DIM)).astype(np.float32) * 4
    return centres[rng.integers(0, 50, n)] + rng.standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return _clustered(N, 0), _clustered(200, 1)


@pytest.fixture(scope="module")
def shards(data, tmp_path_factory):
    """4 shards with global ids 10 * row + 3 (not positions, so ids are really carried)."""
    x, _ = data
    folder = tmp_path_factory.mktemp("shards")
    bounds = np.linspace(0, N, SHARDS + 1).astype(int)
    parts = [
        write_shard(folder, part_stem(0, i), x[a:b], np.arange(a, b) * 10 + 3)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    ShardManifest(folder, DIM, "float32", N, None, tuple(parts)).write()
    return folder


@pytest.fixture(scope="module")
def flat_built(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("flat")
    meta = build_ondisk(shards, out, kind="ivf_flat", nlist=64, nprobe=8, memory_budget_mb=1)
    return out, meta


def test_ondisk_ivf_flat_equals_in_memory_ivf_flat_with_its_quantizer(data, flat_built):
    x, queries = data
    out, meta = flat_built
    assert meta["ntotal"] == N and meta["parts"] > SHARDS  # the 1 MiB budget split the shards
    index = open_ondisk(out)
    on_disk = faiss.extract_index_ivf(index.faiss_index)
    assert isinstance(faiss.downcast_InvertedLists(on_disk.invlists), faiss.OnDiskInvertedLists)
    quantizer = faiss.clone_index(on_disk.quantizer)
    memory = faiss.IndexIVFFlat(quantizer, DIM, 64)
    memory.add_with_ids(x, np.arange(N) * 10 + 3)
    memory.nprobe = 8
    expected_d, expected_i = memory.search(queries, 10)
    distances, ids = index.search(queries, 10)
    np.testing.assert_array_equal(ids, expected_i)
    np.testing.assert_array_equal(distances, expected_d)


def test_ondisk_ivf_pq_recall_against_exact_search(data, shards, tmp_path):
    x, queries = data
    build_ondisk(shards, tmp_path, kind="ivf_pq", nlist=64, m=16, nprobe=16, memory_budget_mb=4)
    index = open_ondisk(tmp_path)
    assert index.kind == "ivf_pq" and index.factory == "IVF64,PQ16x8" and index.nprobe == 16
    exact = EmbeddingIndex(DIM)
    exact.add(x, ids=np.arange(N) * 10 + 3)
    _, truth = exact.search(queries, 10)
    _, ids = index.search(torch.from_numpy(queries), 10)  # torch in, torch out
    assert isinstance(ids, torch.Tensor)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.numpy(), truth)])
    assert recall >= 0.75, recall  # 0.83 measured


def test_search_after_moving_the_folder_reads_the_mmapped_lists(data, flat_built, tmp_path):
    _, queries = data
    out, _ = flat_built
    expected = open_ondisk(out).search(queries, 5)
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    index = open_ondisk(moved, nprobe=8)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index.faiss_index).invlists)
    assert lists.filename == str(moved / LISTS_FILE) and lists.read_only
    got = index.search(queries, 5)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def test_missing_or_truncated_lists_file_is_a_clear_error(flat_built, tmp_path):
    out, _ = flat_built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lists = copy / LISTS_FILE
    with open(lists, "r+b") as f:
        f.truncate(lists.stat().st_size - 8)
    with pytest.raises(ValueError, match="truncated"):
        open_ondisk(copy)
    lists.unlink()
    with pytest.raises(FileNotFoundError, match="lists.ivfdata is missing"):
        open_ondisk(copy)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_build(rank: int, world: int, port: int, shards, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        build_ondisk(shards, out, kind="ivf_flat", nlist=64, nprobe=8, memory_budget_mb=1)
    finally:
        torch.distributed.destroy_process_group()


def test_two_process_build_equals_the_one_process_build(data, shards, flat_built, tmp_path):
    _, queries = data
    out, meta = flat_built
    mp.spawn(_rank_build, args=(2, _free_port(), shards, tmp_path), nprocs=2, join=True)
    two = open_ondisk(tmp_path)
    one = open_ondisk(out)
    assert two.ntotal == one.ntotal == N
    for a, b in zip(two.search(queries, 10), one.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert len(list(tmp_path.iterdir())) == 3  # index, lists, description: parts are gone


def test_steps_by_hand_split_across_ranks_add_every_vector_once(shards, tmp_path):
    settings = OnDiskSettings(DIM, "ivf_pq", nlist=32, m=8)
    train_ondisk(shards, tmp_path, settings)
    written = [
        add_part(shards, tmp_path, rank=r, world_size=3, memory_budget_mb=2) for r in (0, 1, 2)
    ]
    assert all(written[:2]) and all(p.parent.name == "parts" for w in written for p in w)
    meta = merge_parts(tmp_path)
    assert meta["ntotal"] == N and meta["next_id"] == (N - 1) * 10 + 4
    index = open_ondisk(tmp_path)  # held: stored_ids reads the lists it owns
    stored = np.sort(stored_ids(index.faiss_index))
    np.testing.assert_array_equal(stored, np.arange(N) * 10 + 3)


def test_bad_arguments_name_themselves(shards, tmp_path):
    with pytest.raises(ValueError, match="kind"):
        build_ondisk(shards, tmp_path, kind="hnsw")
    with pytest.raises(ValueError, match="IVF"):
        build_ondisk(shards, tmp_path, kind=None, factory="HNSW32,Flat")
    with pytest.raises(ValueError, match="train_size"):
        build_ondisk(shards, tmp_path, kind="ivf_flat", nlist=64, train_size=10)
    with pytest.raises(ValueError, match="memory_budget_mb"):
        build_ondisk(shards, tmp_path, kind="ivf_flat", nlist=64, memory_budget_mb=0)
    with pytest.raises(FileNotFoundError, match="ondisk.json"):
        open_ondisk(tmp_path / "nothing")


def test_search_shards_equals_one_exact_index_ties_by_id(data):
    x, queries = data
    x = np.concatenate([x[:500], x[:100]])  # exact duplicates: ties resolved by id
    ids = np.random.default_rng(2).permutation(600) * 7
    whole = EmbeddingIndex(DIM)
    whole.add(x, ids=ids)
    parts = [EmbeddingIndex(DIM) for _ in range(3)]
    for part, rows in zip(parts, np.array_split(np.arange(600), 3)):
        part.add(x[rows], ids=ids[rows])
    queries = np.concatenate([queries[:20], x[:5]])
    d, i = search_shards(parts, queries, 12)
    assert d.shape == (25, 12)
    np.testing.assert_allclose(d, whole.search(queries, 12)[0], rtol=1e-5, atol=1e-4)
    key = np.lexsort((i, d), axis=1)  # already in (distance, id) order
    np.testing.assert_array_equal(key, np.broadcast_to(np.arange(12), key.shape))
    # every tie at the same distance has its smaller id first; the duplicates are found
    assert all(set(row[:2]) == {ids[q], ids[500 + q]} for q, row in zip(range(5), i[20:]))
    assert search_shards(parts, queries[:1], 10_000)[1].shape == (1, 600)


def test_cli_builds_from_shards_and_searches_the_folder(data, shards, tmp_path, capfd):
    from metricssl.cli import main

    _, queries = data
    out = tmp_path / "index"
    np.save(tmp_path / "q.npy", queries[:3])
    argv = ["index", "build", "--from-shards", str(shards), "--kind", "ivf_flat"]
    assert main([*argv, "--nlist", "32", "--out", str(out), "--json"]) == 0
    built = json.loads(capfd.readouterr().out)  # one JSON object: FAISS's C lines silenced
    assert built["ntotal"] == N and built["factory"] == "IVF32,Flat"
    found = tmp_path / "found.npz"
    argv = ["index", "search", str(out), str(tmp_path / "q.npy"), "-k", "4", "--nprobe", "32"]
    assert main([*argv, "--output", str(found), "--json"]) == 0
    json.loads(capfd.readouterr().out)
    exact = EmbeddingIndex(DIM)
    exact.add(data[0], ids=np.arange(N) * 10 + 3)
    np.testing.assert_array_equal(np.load(found)["ids"], exact.search(queries[:3], 4)[1])
    argv = ["index", "build", "--from-shards", str(shards), "--kind", "hnsw", "--out", "x"]
    assert main(argv) == 2
    assert "--from-shards builds ivf_pq or ivf_flat" in capfd.readouterr().err


def test_merge_top_k_of_remote_answers_ranks_by_distance_then_id():
    first = (np.array([[0.5, 2.0, np.inf]], np.float32), np.array([[9, 4, -1]]))
    second = (torch.tensor([[0.5, 1.0]]), torch.tensor([[1, 8]]))
    d, i = merge_top_k([first, second], 4, "l2")
    assert i.tolist() == [[1, 9, 8, 4]] and d.tolist() == [[0.5, 0.5, 1.0, 2.0]]
    d, i = merge_top_k([first, second], 10, "ip")  # largest first, the missing entry last
    assert i.tolist() == [[4, 8, 1, 9, -1]]
    with pytest.raises(ValueError, match="metric"):
        merge_top_k([first], 2, "cos")


def test_opened_index_refuses_changes_instead_of_aborting(flat_built):
    index = open_ondisk(flat_built[0])
    vector = np.zeros((1, DIM), np.float32)
    for call in (
        lambda: index.add(vector, ids=[1]),
        lambda: index.remove([3]),
        lambda: index.train(vector),
        lambda: index.save("x.msidx"),
    ):
        with pytest.raises(ValueError, match="read-only"):
            call()
    assert index.ntotal == N
