import faiss
import numpy as np
import pytest
import torch

from metricssl.index.torch_search import exact_search, squared_norms


def data(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def faiss_flat(database, queries, k, metric):
    index = (
        faiss.IndexFlatL2(database.shape[1])
        if metric == "l2"
        else faiss.IndexFlatIP(database.shape[1])
    )
    index.add(database.numpy())
    return index.search(queries.numpy(), k)


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("nq,n,k", [(1, 1, 1), (5, 40, 3), (70, 300, 25), (19, 7, 10)])
def test_matches_faiss_flat(metric, nq, n, k):
    x, q = data(n, 16, 0), data(nq, 16, 1)
    d, i = exact_search(q, x, k, metric)
    ref_d, ref_i = faiss_flat(x, q, k, metric)
    pad = float("inf") if metric == "l2" else float("-inf")
    ref_d[ref_i < 0] = pad  # FAISS pads with +-FLT_MAX; we pad with infinities
    torch.testing.assert_close(d, torch.from_numpy(ref_d), rtol=1e-5, atol=1e-4)
    assert torch.equal(i, torch.from_numpy(ref_i))


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_tiny_budget_gives_the_same_answer_as_one_tile(metric):
    x, q = data(500, 8, 2), data(33, 8, 3)
    one_tile = exact_search(q, x, 12, metric, budget_bytes=1 << 30)
    # 2 KiB: 256 database rows per tile and one query at a time, so many tiles are merged.
    tiled = exact_search(q, x, 12, metric, database_sq_norms=squared_norms(x), budget_bytes=2048)
    torch.testing.assert_close(tiled, one_tile, rtol=0, atol=1e-5)


def test_squared_l2_distances_are_never_negative():
    x = data(50, 8, 4) * 1e3
    d, i = exact_search(x, x, 1, "l2")
    assert (d >= 0).all() and torch.equal(i[:, 0], torch.arange(50))


def test_empty_inputs():
    d, i = exact_search(torch.empty(0, 4), data(3, 4, 0), 2, "ip")
    assert d.shape == (0, 2) and i.shape == (0, 2)
    d, i = exact_search(data(2, 4, 0), torch.empty(0, 4), 2, "l2")
    assert (i == -1).all() and torch.isposinf(d).all()


def test_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        exact_search(data(2, 4, 0), data(2, 4, 0), 1, "cosine")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, q = data(5000, 64, 5), data(100, 64, 6)
    cpu = exact_search(q, x, 10, "l2")
    gpu = exact_search(q.cuda(), x.cuda(), 10, "l2")
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-4, atol=1e-3)
    assert np.mean((gpu[1].cpu() == cpu[1]).numpy()) > 0.99
