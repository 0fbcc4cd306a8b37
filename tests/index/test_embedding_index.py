import faiss
import numpy as np
import pytest
import torch

from metricssl.core.chunking import get_memory_budget, set_memory_budget
from metricssl.index import index_kinds
from metricssl.index.embedding_index import EmbeddingIndex
from metricssl.index.faiss_gpu import faiss_gpu_count
from metricssl.index.index_file import write_index_file

DIM = 32
APPROXIMATE = {
    "ivf_flat": dict(nlist=16),
    "hnsw": dict(),
    "ivf_pq": dict(nlist=16, m=8, nbits=6),
}
ALL_KINDS = {"flat": dict(), **APPROXIMATE}


def blobs(n=2000, dim=DIM, centers=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(centers, dim, generator=g) * 4
    return means[torch.randint(0, centers, (n,), generator=g)] + torch.randn(n, dim, generator=g)


def build(kind, metric="l2", data=None, **kwargs):
    data = blobs(500) if data is None else data
    index = EmbeddingIndex(DIM, kind, metric, **{**ALL_KINDS[kind], **kwargs})
    index.train(data)
    index.add(data)
    return index


def brute_force(database, queries, k, metric):
    x, q = database.double(), queries.double()
    if metric == "cosine":
        x, q = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(q, dim=1)
    if metric == "l2":
        return torch.cdist(q, x).pow(2).topk(k, dim=1, largest=False)
    return (q @ x.T).topk(k, dim=1)


def assert_same_neighbours(d, i, ref_d, ref_i, rtol=1e-4, atol=1e-4):
    d, i, ref_d, ref_i = (torch.as_tensor(np.asarray(t)) for t in (d, i, ref_d, ref_i))
    torch.testing.assert_close(d.double(), ref_d.double(), rtol=rtol, atol=atol)
    # Ids may only differ where two candidates are tied in distance.
    tied = torch.isclose(d.double(), ref_d.double(), rtol=rtol, atol=atol)
    assert bool(((i == ref_i) | tied).all())


def recall_at(found, exact):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())])


# ---------------------------------------------------------------- exact search


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_search_matches_brute_force(metric, backend):
    x, q = blobs(400), blobs(30, seed=1)
    index = EmbeddingIndex(DIM, "flat", metric, backend=backend)
    index.add(x)
    d, i = index.search(q, 7)
    ref_d, ref_i = brute_force(x, q, 7, metric)
    assert_same_neighbours(d, i, ref_d, ref_i)


@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_engine_path_agrees_with_faiss_and_maps_positions_to_ids(metric):
    x, q = blobs(50), blobs(40, seed=2)
    ids = (np.arange(50) * 7 + 3)[::-1].copy()  # not in storage order
    results = {}
    for backend in ("faiss", "torch"):
        index = EmbeddingIndex(DIM, "flat", metric, backend=backend)
        index.add(x, ids=ids)
        results[backend] = index.search(q.numpy(), 60)
    assert_same_neighbours(*results["torch"], *results["faiss"])
    d, i = results["torch"]
    assert i.shape == (40, 50)  # k > ntotal: every stored vector, no padding
    assert (np.sort(i, axis=1) == np.sort(ids)).all() and np.isfinite(d).all()
    ref_d, positions = brute_force(x, q, 50, metric)
    np.testing.assert_array_equal(i[:, :3], ids[positions[:, :3].numpy()])


def integer_data_with_ties(seed=0):
    """30 integer-valued vectors, each of 6 distinct ones stored 5 times (at scattered
    positions), and 50 queries (the 6 themselves first): many exactly tied distances."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, (6, 8)).astype(np.float32)
    x = np.concatenate([base] * 5)[rng.permutation(30)]
    q = np.concatenate([base, rng.integers(-3, 4, (44, 8)).astype(np.float32)])
    return x, q


@pytest.mark.parametrize("n_queries", [1, 50])  # FAISS's per-query and BLAS code paths
def test_l2_exact_ties_same_order_on_every_path(n_queries):
    x, q = integer_data_with_ties()
    results = {}
    for backend in ("faiss", "torch"):
        index = EmbeddingIndex(8, "flat", "l2", backend=backend)
        index.add(x)
        results[backend] = index.search(q[:n_queries], 12)
    (d, i), (ref_d, ref_i) = results["torch"], results["faiss"]
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(d, ref_d)
    # The rule itself: distance, then ascending id (automatic ids follow storage order).
    exact = ((q[:n_queries, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(
        i, np.lexsort((np.arange(30)[None].repeat(n_queries, 0), exact))[:, :12]
    )


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_similarity_exact_ties_by_ascending_position_faiss_differs(metric):
    x, q = integer_data_with_ties()
    # The query's own 5 copies tie for the best score (under ip and cosine alike).
    copies = np.flatnonzero((x == q[0]).all(axis=1))
    engine = EmbeddingIndex(8, "flat", metric)
    engine.add(x)
    d, i = engine.search(q[:1], 12)
    assert i[0, :5].tolist() == copies.tolist()  # ascending position = ascending id
    assert (d[0, :5] == d[0, 0]).all() and (d[0, 5:] < d[0, 0]).all()
    faiss_path = EmbeddingIndex(8, "flat", metric, backend="faiss")
    faiss_path.add(x)
    # FAISS's IndexFlatIP keeps exact ties by descending position (documented difference).
    assert faiss_path.search(q[:1], 12)[1][0, :5].tolist() == copies[::-1].tolist()


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_engine_chunks_under_a_small_memory_budget(metric):
    x, q = blobs(700), blobs(90, seed=5)
    whole = build("flat", metric, data=x).search(q, 25)
    index = build("flat", metric, data=x, chunk_size=16)
    previous = get_memory_budget()
    set_memory_budget(8192)  # two or three queries per engine chunk
    try:
        chunked = index.search(q, 25)
    finally:
        set_memory_budget(previous)
    # Different block sizes round differently in the last bits; neighbours agree.
    assert_same_neighbours(*chunked, *whole, rtol=1e-5, atol=1e-5)
    assert_same_neighbours(*chunked, *brute_force(x, q, 25, metric))


@pytest.mark.parametrize("backend", ["auto", "faiss"])
def test_squared_l2_distances_are_never_negative(backend):
    # |q|^2 + |x|^2 - 2 q.x rounds below zero for a vector and itself; both paths clamp.
    x = blobs(200) * 1e3
    index = build("flat", data=x, backend=backend)
    d, i = index.search(x, 1)
    assert (d >= 0).all() and i[:, 0].tolist() == list(range(200))


def test_torch_path_sees_later_adds_and_removes():
    x = blobs(100)
    index = EmbeddingIndex(DIM, "flat", backend="torch")
    index.add(x[:50])
    assert index.search(x[60:61], 1)[1].item() != 60
    index.add(x[50:])  # consecutive ids: row r gets id r
    assert index.search(x[60:61], 1)[1].item() == 60
    index.remove([60])
    assert index.search(x[60:61], 1)[1].item() != 60


@pytest.mark.parametrize("backend", ["auto", "faiss"])
@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_huge_k_returns_what_exists(kind, backend):
    # k = 10**9 once allocated (nq, k) arrays: killed for memory.
    x = blobs(300)
    index = build(kind, "ip", data=x, backend=backend, nprobe=16)
    for k in (10**9, np.int64(2**62), 300, 301):
        d, i = index.search(x[:3], k)
        assert d.shape == i.shape == (3, 300)
        assert i.dtype == torch.int64 and d.dtype == torch.float32
    if kind in ("flat", "ivf_flat"):  # every vector reachable (nprobe = nlist)
        assert (i >= 0).all() and torch.isfinite(d).all()
        assert (i.sort(dim=1).values == torch.arange(300)).all()


def test_approximate_kinds_pad_inside_the_returned_columns():
    x = blobs(300)
    index = build("ivf_flat", "ip", data=x, nprobe=1)
    d, i = index.search(x[:3], 10**9)
    assert i.shape == (3, 300)
    missing = i == -1  # one of 16 lists probed: far fewer than 300 candidates
    assert missing.any(dim=1).all() and missing[:, -1].all()
    assert torch.isneginf(d[missing]).all() and torch.isfinite(d[~missing]).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_search_of_empty_index_returns_no_columns(kind):
    for backend in ("auto", "faiss"):
        index = EmbeddingIndex(DIM, kind, backend=backend)
        d, i = index.search(np.zeros((2, DIM), np.float32), 3)
        assert d.shape == i.shape == (2, 0) and d.dtype == np.float32 and i.dtype == np.int64
        d, i = index.search(torch.zeros(2, DIM), 10**9)
        assert d.shape == i.shape == (2, 0) and i.dtype == torch.int64
        with pytest.raises(ValueError, match="queries contains NaN"):
            index.search(torch.full((2, DIM), float("nan")), 3)


@pytest.mark.parametrize("k", [0, -1, True, False, 2.5, 3.0, "3", None, np.float64(2)])
def test_bad_k_is_a_value_error_naming_k(k):
    index = build("flat", data=blobs(20))
    for q in (blobs(2), blobs(2).numpy()):
        with pytest.raises(ValueError, match="k must be"):
            index.search(q, k)


def test_cosine_handles_zero_vectors():
    index = EmbeddingIndex(DIM, "flat", "cosine")
    index.add(torch.cat([torch.zeros(1, DIM), blobs(10)]))
    for backend in ("faiss", "torch"):
        index._backend = backend
        d, _ = index.search(torch.zeros(1, DIM), 3)
        assert torch.isfinite(d).all()


# ---------------------------------------------------------------- approximate kinds


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("kind", list(APPROXIMATE))
def test_approximate_kinds_reach_high_recall(kind, metric):
    x = blobs(2000)
    q = x[:200] + 0.1 * blobs(200, seed=3)
    exact = EmbeddingIndex(DIM, "flat", metric)
    exact.add(x)
    _, truth = exact.search(q, 10)
    _, found = build(kind, metric, data=x).search(q, 10)
    if kind == "ivf_pq":
        # PQ codes blur distances between close neighbours: the standard measure for
        # compressed indexes is whether the true nearest neighbour is in the top 10.
        assert (found == truth[:, :1]).any(dim=1).float().mean() >= 0.6
        assert recall_at(found, truth) >= 0.25
    else:
        assert recall_at(found, truth) >= 0.95


def test_nprobe_and_ef_search_are_applied():
    x = blobs(1000)
    ivf = build("ivf_flat", data=x, nprobe=1)
    exact = build("flat", data=x)
    _, truth = exact.search(x[:100], 10)
    low = recall_at(ivf.search(x[:100], 10)[1], truth)
    ivf.nprobe = 16  # every list: IVF-Flat becomes exact
    assert recall_at(ivf.search(x[:100], 10)[1], truth) == 1.0 > low
    hnsw = build("hnsw", data=x, ef_search=12)
    hnsw.search(x[:1], 10)
    assert index_kinds.hnsw_of(hnsw.faiss_index).efSearch == 12
    with pytest.raises(ValueError, match="nprobe"):
        ivf.nprobe = 0


def test_factory_string_index():
    x = blobs(1000)
    index = EmbeddingIndex(DIM, factory="PCA16,IVF8,SQ8", metric="l2")
    assert index.kind == "factory" and not index.is_trained
    index.train(x)
    ids = index.add(x.numpy())
    assert isinstance(ids, np.ndarray) and len(index) == 1000
    d, i = index.search(x[:5].numpy(), 5)
    assert i.shape == (5, 5) and (i >= 0).all()


# ---------------------------------------------------------------- save / load


@pytest.mark.parametrize(
    "kind,metric", [("flat", "l2"), ("ivf_flat", "ip"), ("hnsw", "cosine"), ("ivf_pq", "l2")]
)
def test_save_load_round_trip(tmp_path, kind, metric):
    x = blobs(600)
    index = build(kind, metric, data=x, nprobe=3, ef_search=20)
    index.remove([5, 6])
    before = index.search(x[:20], 8)
    path = tmp_path / "vectors.index"
    index.save(path)
    loaded = EmbeddingIndex.load(path)
    assert (loaded.kind, loaded.metric, loaded.dim, loaded.factory) == (
        kind,
        metric,
        DIM,
        index.factory,
    )
    assert (loaded.nprobe, loaded.ef_search, len(loaded)) == (3, 20, 598)
    after = loaded.search(x[:20], 8)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # Default ids keep counting where the saved index stopped.
    assert loaded.add(x[:1]).tolist() == [600]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_save_load_factory_index(tmp_path):
    index = EmbeddingIndex(DIM, factory="HNSW8", metric="ip")
    index.add(blobs(100), ids=np.arange(100) + 1000)
    index.save(tmp_path / "f.index")
    loaded = EmbeddingIndex.load(tmp_path / "f.index", backend="faiss")
    assert loaded.kind == "factory" and loaded.factory == "HNSW8"
    q = blobs(5, seed=4)
    torch.testing.assert_close(loaded.search(q, 4), index.search(q, 4), rtol=0, atol=0)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "v.index"
    build("flat", data=blobs(10)).save(path)
    build("flat", data=blobs(20)).save(path)
    assert len(EmbeddingIndex.load(path)) == 20


def test_load_rejects_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "v.index"
    build("ivf_flat", data=blobs(300)).save(path)
    data = path.read_bytes()
    for cut in (10, 40, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.index"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|not a metricssl"):
            EmbeddingIndex.load(bad)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.index").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checksum"):
        EmbeddingIndex.load(tmp_path / "flipped.index")
    foreign = tmp_path / "foreign.index"
    faiss.write_index(faiss.IndexFlatL2(DIM), str(foreign))
    with pytest.raises(ValueError, match="not a metricssl index"):
        EmbeddingIndex.load(foreign)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="not a metricssl index"):
        EmbeddingIndex.load(tmp_path / "empty")


def test_load_rejects_header_that_disagrees_with_payload(tmp_path):
    index = build("flat", data=blobs(10))
    good = {"kind": "flat", "metric": "l2", "dim": DIM, "factory": "Flat", "next_id": 10}
    good.update(nlist=100, m=8, nbits=8, hnsw_m=32, ef_construction=40, nprobe=8, ef_search=64)
    good["ntotal"] = 10
    cases = {
        "dim": {**good, "dim": DIM + 1},
        "ntotal": {**good, "ntotal": 11},
        "metric": {**good, "metric": "ip"},
        "lacks the field": {k: v for k, v in good.items() if k != "next_id"},
        "invalid": {**good, "kind": "annoy"},
        "factory": {**good, "factory": "HNSW32,Flat"},
    }
    for match, header in cases.items():
        path = tmp_path / "h.index"
        write_index_file(path, header, index.faiss_index)
        with pytest.raises(ValueError, match=match):
            EmbeddingIndex.load(path)
    write_index_file(tmp_path / "ok.index", good, index.faiss_index)
    assert len(EmbeddingIndex.load(tmp_path / "ok.index")) == 10


# ---------------------------------------------------------------- ids and remove


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_remove(kind):
    x = blobs(400)
    index = EmbeddingIndex(DIM, kind, "l2", **ALL_KINDS[kind])
    index.train(x)
    ids = np.arange(400, dtype=np.int64) * 10
    index.add(x, ids=torch.from_numpy(ids))
    gone = ids[:100]
    assert index.remove(torch.from_numpy(gone)) == 100
    assert index.remove(gone) == 0 and index.remove([]) == 0
    assert len(index) == 300
    _, found = index.search(x, 20)
    assert not np.isin(found.numpy(), gone).any()
    if kind != "ivf_pq":  # exact storage: every remaining vector finds itself
        _, nearest = index.search(x[100:], 1)
        assert nearest[:, 0].tolist() == ids[100:].tolist()


def test_hnsw_remove_keeps_settings():
    x = blobs(300)
    index = build("hnsw", "cosine", data=x, ef_construction=30)
    index.remove(range(0, 300, 2))
    hnsw = index_kinds.hnsw_of(index.faiss_index)
    assert hnsw.efConstruction == 30 and len(index) == 150
    d, i = index.search(x[1::2], 1)
    assert i[:, 0].tolist() == list(range(1, 300, 2))
    torch.testing.assert_close(d[:, 0], torch.ones(150), rtol=0, atol=1e-5)


def test_ids_default_explicit_and_returned_in_kind():
    index = EmbeddingIndex(DIM)
    assert index.add(blobs(3).numpy()).tolist() == [0, 1, 2]
    returned = index.add(blobs(2), ids=[50, 40])
    assert torch.is_tensor(returned) and returned.tolist() == [50, 40]
    assert index.add(blobs(2).double()).tolist() == [51, 52]
    index.remove([52])
    assert index.add(blobs(1)).tolist() == [53]  # removed ids are not reused
    assert index.add(blobs(0)).tolist() == [] and len(index) == 7


@pytest.mark.parametrize(
    "ids,error,match",
    [
        (np.arange(4, dtype=np.float32), TypeError, "integers"),
        (torch.ones(4, dtype=torch.bool), TypeError, "integer"),
        (np.arange(3), ValueError, "length 3"),
        (np.arange(8).reshape(2, 4), ValueError, "1D"),
        ([0, 1, 2, -5], ValueError, ">= 0"),
        ([7, 7, 8, 9], ValueError, "distinct"),
        ([100, 101, 102, 1], ValueError, "already in the index"),
        ("abcd", TypeError, "integers"),
    ],
)
def test_bad_ids(ids, error, match):
    for kind in ("flat", "ivf_flat"):
        index = build(kind, data=blobs(100))
        with pytest.raises(error, match=match):
            index.add(blobs(4), ids=ids)
        assert len(index) == 100


MAX_ID = 2**63 - 1


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_ids_up_to_the_int64_limit(tmp_path, kind):
    x = blobs(300)
    index = build(kind, data=x[:296])  # automatic ids 0..295
    index.add(x[296:298], ids=[MAX_ID - 3, MAX_ID - 2])
    assert index.add(x[298:]).tolist() == [MAX_ID - 1, MAX_ID]  # automatic, up to the limit
    if kind != "ivf_pq":
        _, found = index.search(x[296:], 1)
        assert found[:, 0].tolist() == [MAX_ID - 3, MAX_ID - 2, MAX_ID - 1, MAX_ID]
    # The next automatic id would be 2**63: refused, nothing added (it once wrapped).
    with pytest.raises(ValueError, match=r"ids: automatic ids .* 2\*\*63 - 1"):
        index.add(x[:1])
    assert len(index) == 300
    index.save(tmp_path / "top.msidx")
    loaded = EmbeddingIndex.load(tmp_path / "top.msidx")
    with pytest.raises(ValueError, match="automatic ids"):
        loaded.add(x[:1])
    assert loaded.add(x[:1], ids=[MAX_ID - 300]).tolist() == [MAX_ID - 300]
    assert loaded.remove([MAX_ID]) == 1


@pytest.mark.parametrize(
    "ids,match",
    [
        ([2**63], "fit in int64"),
        ([2**64], "fit in int64"),
        ([-1, 2**63], ">= 0"),
        (np.array([2**63], np.uint64), "fit in int64"),
        ([-1], ">= 0"),  # FAISS's "no result" id
    ],
)
def test_ids_beyond_int64_or_negative_are_value_errors(ids, match):
    index = EmbeddingIndex(DIM)
    with pytest.raises(ValueError, match=match):
        index.add(blobs(len(ids)), ids=ids)
    assert len(index) == 0


# ---------------------------------------------------------------- types, chunks, progress


@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])
def test_types_are_preserved(kind):
    x = blobs(200)
    index = build(kind, data=x)
    for q in (x[:5].numpy(), x[:5].double().numpy()):
        d, i = index.search(q, 3)
        assert isinstance(d, np.ndarray) and d.dtype == np.float32 and i.dtype == np.int64
    reference = index.search(x[:5], 3)
    for q in (x[:5], x[:5].half(), x[:5].bfloat16(), x[:5].double(), x.T.contiguous().T[:5]):
        d, i = index.search(q.requires_grad_(q.dtype == torch.float32), 3)
        assert torch.is_tensor(d) and d.dtype == torch.float32 and i.dtype == torch.int64
        assert d.device == q.device
        torch.testing.assert_close(i[:, 0], reference[1][:, 0])


@pytest.mark.parametrize(
    "kind,backend", [("flat", "faiss"), ("flat", "torch"), ("hnsw", "auto"), ("ivf_pq", "auto")]
)
def test_chunked_add_and_search_equal_one_shot(kind, backend):
    x = blobs(500)
    one = build(kind, data=x, backend=backend)
    chunked = build(kind, data=x, backend=backend, chunk_size=37)
    chunked_search = chunked.search(x[::3], 9)
    torch.testing.assert_close(chunked_search, one.search(x[::3], 9), rtol=0, atol=0)
    # The chunked index and the one-shot one hold the same data in the same order.
    if kind == "flat":
        np.testing.assert_array_equal(
            faiss.rev_swig_ptr(faiss.downcast_index(chunked.faiss_index.index).get_xb(), 10),
            faiss.rev_swig_ptr(faiss.downcast_index(one.faiss_index.index).get_xb(), 10),
        )


def test_progress_bar_only_when_asked_or_chunked(capsys):
    x = blobs(100)
    EmbeddingIndex(DIM, chunk_size=10, progress=True).add(x)
    assert "EmbeddingIndex.add" in capsys.readouterr().err
    EmbeddingIndex(DIM, progress=None).add(x)  # one chunk: no bar
    EmbeddingIndex(DIM, chunk_size=10, progress=False).add(x)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(dim=0), ValueError, "dim"),
        (dict(dim=3.0), TypeError, "dim"),
        (dict(kind="annoy"), ValueError, "kind"),
        (dict(metric="manhattan"), ValueError, "metric"),
        (dict(kind="flat", factory="Flat"), ValueError, "either kind or factory"),
        (dict(factory=""), ValueError, "factory"),
        (dict(factory="Bogus12"), ValueError, "could not parse"),
        (dict(kind="ivf_pq", m=5), ValueError, "m=5 must divide"),
        (dict(kind="ivf_pq", m=0), ValueError, "m must be"),
        (dict(nbits=17), ValueError, "nbits"),
        (dict(nlist=0), ValueError, "nlist"),
        (dict(nprobe=0), ValueError, "nprobe"),
        (dict(hnsw_m=1), ValueError, "hnsw_m"),
        (dict(ef_construction=0), ValueError, "ef_construction"),
        (dict(ef_search=-1), ValueError, "ef_search"),
        (dict(device="tpu"), ValueError, "device"),
        (dict(gpu_ids=[-1]), ValueError, "gpu_ids"),
        (dict(gpu_ids=0), TypeError, "gpu_ids"),
        (dict(shard="yes"), TypeError, "shard"),
        (dict(backend="numpy"), ValueError, "backend"),
        (dict(kind="hnsw", backend="torch"), ValueError, "backend='torch'"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(progress="yes"), TypeError, "progress"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match):
    kwargs = {"dim": DIM, **kwargs}
    with pytest.raises(error, match=match):
        EmbeddingIndex(**kwargs)


@pytest.mark.skipif(faiss_gpu_count() > 0, reason="this FAISS has GPU support")
def test_device_cuda_needs_faiss_gpu():
    with pytest.raises(ValueError, match="device='cuda'"):
        EmbeddingIndex(DIM, device="cuda")


def test_bad_search_inputs():
    index = build("flat", data=blobs(50))
    q = blobs(2)
    cases = [
        (lambda: index.search(q, 0), ValueError, "k must be >= 1"),
        (lambda: index.search(q, 2.5), ValueError, "k must be a positive int"),
        (lambda: index.search(q[:, :5], 1), ValueError, "dimension 5 but the index has dim=32"),
        (lambda: index.search(q[0], 1), ValueError, r"queries\[None\]"),
        (lambda: index.search(q.tolist(), 1), TypeError, "torch.Tensor or numpy"),
        (lambda: index.search(q.long(), 1), TypeError, "floating-point"),
        (lambda: index.search(q.numpy().astype(np.int32), 1), TypeError, "floating-point"),
    ]
    for bad in (float("nan"), float("inf")):
        poisoned = q.clone()
        poisoned[1, 3] = bad
        cases.append((lambda p=poisoned: index.search(p, 1), ValueError, "NaN or Inf"))
        cases.append((lambda p=poisoned: index.search(p.numpy(), 1), ValueError, "NaN or Inf"))
    huge = q.double()
    huge[0, 0] = 1e39  # finite in float64, inf in float32
    cases.append((lambda: index.search(huge, 1), ValueError, "float32 range"))
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    index._backend = "torch"
    with pytest.raises(ValueError, match="NaN or Inf"):
        index.search(torch.full((1, DIM), float("nan")), 1)


@pytest.mark.parametrize("kind", ["flat", "ivf_pq"])
def test_nonfinite_vectors_are_refused_and_nothing_is_added(kind):
    x = blobs(300)
    index = build(kind, data=x, chunk_size=50)
    poisoned = x.clone()
    poisoned[250, 0] = float("nan")
    with pytest.raises(ValueError, match="vectors contains NaN"):
        index.add(poisoned)
    assert len(index) == 300
    fresh = EmbeddingIndex(DIM, kind, **ALL_KINDS[kind])
    if kind != "flat":
        with pytest.raises(ValueError, match="vectors contains NaN"):
            fresh.train(poisoned)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("kind,backend", [("flat", "auto"), ("flat", "faiss"), ("hnsw", "auto")])
def test_vectors_whose_squared_norms_overflow_float32_are_refused(kind, backend, metric):
    # 1e20**2 overflows float32: FAISS returned inf/NaN distances and wrong neighbours.
    x = blobs(100)
    index = build(kind, metric, data=x, backend=backend, chunk_size=30)
    huge = x.clone()
    huge[70, 3] = 1e20
    with pytest.raises(ValueError, match="vectors are too large: a squared L2 norm"):
        index.add(huge)
    assert len(index) == 100  # nothing added, although the bad row is in the third chunk
    for q in (huge[60:80], huge[60:80].numpy(), huge[60:80].double()):
        with pytest.raises(ValueError, match="queries are too large"):
            index.search(q, 3)
    fine = x * 1e17  # squared norms below 1e37: within float32
    index.add(fine[:5])
    assert index.search(fine[:5], 1)[1][:, 0].tolist() == list(range(100, 105))


def test_cosine_takes_any_finite_scale():
    x = blobs(50)
    index = EmbeddingIndex(DIM, "flat", "cosine")
    index.add(torch.cat([x[:1] * 1e30, x[1:] * 1e-30]))  # norms over- and underflow float32
    for backend in ("torch", "faiss"):
        index._backend = backend
        d, i = index.search(x * 1e25, 1)
        assert i[:, 0].tolist() == list(range(50))
        torch.testing.assert_close(d[:, 0], torch.ones(50), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
def test_untrained_index_errors(kind):
    index = EmbeddingIndex(DIM, kind, **ALL_KINDS[kind])
    x = blobs(300)
    with pytest.raises(ValueError, match="not trained.*before search"):
        index.search(x, 1)
    with pytest.raises(ValueError, match="not trained.*before add"):
        index.add(x)
    with pytest.raises(ValueError, match="needs at least"):
        index.train(x[:10])
    index.train(x)
    index.add(x)
    with pytest.raises(ValueError, match="must come before add"):
        index.train(x)


def test_training_samples_at_most_256_points_per_centroid():
    index = EmbeddingIndex(DIM, "ivf_flat", nlist=2)
    x = blobs(2000)
    index.train(x)  # 2000 > 256 * 2: trains on a sample, still a valid index
    index.add(x)
    assert index.is_trained and len(index) == 2000


def test_remove_of_an_index_without_removal_is_a_clear_error():
    index = EmbeddingIndex(DIM, factory="Flat,RFlat")  # IndexRefineFlat cannot remove
    index.add(blobs(10))
    with pytest.raises(ValueError, match="does not support remove"):
        index.remove([1])


# ---------------------------------------------------------------- GPU (skipped without one)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("metric", ["l2", "ip", "cosine"])
def test_cuda_queries_use_the_engine_and_stay_on_gpu(metric):
    x = blobs(3000)
    index = build("flat", metric, data=x)
    q = x[:64].cuda()
    d, i = index.search(q, 10)
    assert d.device == q.device and i.device == q.device
    ref_d, ref_i = index.search(x[:64].numpy(), 10)
    assert_same_neighbours(d.cpu(), i.cpu(), ref_d, ref_i)


@pytest.mark.gpu
@pytest.mark.skipif(faiss_gpu_count() == 0, reason="needs a FAISS GPU build and CUDA")
@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq"])
def test_faiss_gpu_copy_matches_cpu(kind):
    x = blobs(2000)
    gpu = build(kind, data=x, device="cuda", backend="faiss", nprobe=16)
    cpu = build(kind, data=x, device="cpu", backend="faiss", nprobe=16)
    _, truth = cpu.search(x[:100].numpy(), 10)
    _, found = gpu.search(x[:100].numpy(), 10)
    assert recall_at(found, truth) >= 0.95


def test_works_after_faiss_torch_utils_is_imported():
    """PML imports faiss.contrib.torch_utils, which patches FAISS's methods process-wide."""
    import faiss.contrib.torch_utils  # noqa: F401

    x = blobs(300)
    for kind in ("flat", "hnsw", "ivf_flat"):
        index = build(kind, "cosine", data=x, nprobe=3, ef_search=20)
        index.remove([5, 6])
        _, ids = index.search(x[:4], 3)
        assert len(index) == len(x) - 2 and ids.shape == (4, 3)
