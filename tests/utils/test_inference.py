"""utils.inference against PML's on small random data: same neighbours, distances, matches,
clusters and conventions (dtypes, devices, the self-match removal)."""

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning.distances import CosineSimilarity as PMLCosineSimilarity
from pytorch_metric_learning.distances import LpDistance as PMLLpDistance
from pytorch_metric_learning.utils import accuracy_calculator as pml_ac
from pytorch_metric_learning.utils import inference as pml

from metricssl import distances as metricssl_distances
from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.eval.accuracy_calculator import AccuracyCalculator
from metricssl.eval.knn import knn
from metricssl.index.embedding_index import EmbeddingIndex
from metricssl.utils import inference


def _data(nq=40, nr=70, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(nq, d, generator=g), torch.randn(nr, d, generator=g)


def _same_knn(ours, theirs):
    (d1, i1), (d2, i2) = ours, theirs
    assert i1.dtype == i2.dtype == torch.int64 and d1.dtype == d2.dtype == torch.float32
    assert d1.device == d2.device
    assert torch.equal(i1, i2)
    torch.testing.assert_close(d1, d2)


@pytest.mark.parametrize("k", [1, 5, 30])
def test_faiss_knn_matches_pml(k):
    q, r = _data()
    _same_knn(inference.FaissKNN()(q, k, r), pml.FaissKNN()(q, k, r))
    # The reference holds the queries: each query's own row is dropped.
    ref = torch.cat([q, r])
    ours = inference.FaissKNN()(q, k, ref, ref_includes_query=True)
    _same_knn(ours, pml.FaissKNN()(q, k, ref, ref_includes_query=True))
    assert not (ours[1] == torch.arange(len(q))[:, None]).any()


def test_faiss_knn_duplicates_and_half_precision():
    q, r = _data()
    ref = torch.cat([q, q[:5], r])  # exact duplicates of some queries
    ours = inference.FaissKNN()(q, 4, ref, True)
    _same_knn(ours, pml.FaissKNN()(q, 4, ref, True))
    half = inference.FaissKNN()(q.to(torch.bfloat16), 4, r.to(torch.bfloat16))
    expected = pml.FaissKNN()(q.to(torch.bfloat16).float(), 4, r.to(torch.bfloat16).float())
    _same_knn(half, expected)


def test_faiss_knn_with_a_faiss_index_init_fn():
    q, r = _data()
    ours = inference.FaissKNN(index_init_fn=faiss.IndexFlatIP)(q, 6, r)
    _same_knn(ours, pml.FaissKNN(index_init_fn=faiss.IndexFlatIP)(q, 6, r))


def test_faiss_knn_persistent_index_and_files(tmp_path):
    q, r = _data()
    ours = inference.FaissKNN(reset_before=False, reset_after=False)
    theirs = pml.FaissKNN(reset_before=False, reset_after=False)
    for knn_func in (ours, theirs):
        knn_func.train(r[:50])
        knn_func.add(r[50:])
    _same_knn(ours(q, 7), theirs(q, 7))
    ours.save(tmp_path / "ours.index")
    theirs.save(str(tmp_path / "pml.index"))
    for name in ("ours.index", "pml.index"):  # our files, and PML's (FAISS) files
        loaded = inference.FaissKNN(reset_before=False, reset_after=False)
        loaded.load(tmp_path / name)
        _same_knn(loaded(q, 7), theirs(q, 7))
    with pytest.raises(ValueError, match="empty"):
        inference.FaissKNN(reset_before=False)(q, 3)


def test_faiss_knn_trains_an_ivf_index():
    q, r = _data(nr=400)
    knn = inference.FaissKNN(index_init_fn=lambda d: EmbeddingIndex(d, "ivf_flat", nlist=4))
    distances, indices = knn(q, 5, r)
    exact_d, exact_i = pml.FaissKNN()(q, 5, r)
    assert indices.shape == (len(q), 5)
    # nprobe 8 >= nlist 4 visits every list: the search is exact.
    assert torch.equal(indices, exact_i)


def test_faiss_knn_arguments():
    with pytest.raises(TypeError, match="gpus"):
        inference.FaissKNN(gpus=0)
    with pytest.raises(ValueError, match="gpus"):
        inference.FaissKNN(gpus=[])
    with pytest.raises(TypeError, match="reset_before"):
        inference.FaissKNN(reset_before="no")
    with pytest.raises(TypeError, match="index_init_fn"):
        inference.FaissKNN(index_init_fn=3)
    q, r = _data()
    with pytest.raises(ValueError, match="k"):
        inference.FaissKNN()(q, 0, r)
    with pytest.raises(ValueError, match="query"):
        inference.FaissKNN()(q[0], 3, r)


def test_return_results_matches_pml():
    g = torch.Generator().manual_seed(3)
    distances = torch.rand(6, 4, generator=g).sort(dim=1).values
    # Rows 0, 3 and 5 find themselves (at different ranks); the others do not.
    indices = torch.tensor(
        [[4, 7, 0, 2], [8, 3, 5, 6], [1, 0, 4, 8], [3, 1, 2, 7], [0, 2, 6, 1], [2, 8, 1, 5]]
    )
    for flag in (False, True):
        ours = inference.return_results(distances, indices, flag)
        theirs = pml.return_results(distances, indices, flag)
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    own = indices == torch.arange(6)[:, None]
    own[~own.any(dim=1), -1] = True
    assert torch.equal(
        inference.mask_reshape_knn_idx(indices, own), pml.mask_reshape_knn_idx(indices, own)
    )


def test_add_to_index_and_search_and_try_gpu():
    q, r = _data()
    index = EmbeddingIndex(q.shape[1])
    ours = inference.add_to_index_and_search(index, q, r, 5)
    theirs = pml.add_to_index_and_search(faiss.IndexFlatL2(q.shape[1]), q, r, 5)
    _same_knn(ours, theirs)
    # A FAISS index, on the CPU here (no FAISS GPU build): the same result.
    ours = inference.try_gpu(faiss.IndexFlatL2(q.shape[1]), q, r, 5, False, None)
    _same_knn(ours, theirs)
    assert inference.convert_to_cpu_index(index) is index
    flat = faiss.IndexFlatL2(4)
    assert inference.convert_to_cpu_index(flat) is flat


# (ours, PML's) distance pairs: the engine computes the first seven, the distance object the rest.
CUSTOM_DISTANCES = {
    "lp": lambda m: m.LpDistance(),
    "lp_squared": lambda m: m.LpDistance(power=2),
    "lp_raw": lambda m: m.LpDistance(normalize_embeddings=False),
    "lp_raw_squared": lambda m: m.LpDistance(normalize_embeddings=False, power=2),
    "cosine": lambda m: m.CosineSimilarity(),
    "dot": lambda m: m.DotProductSimilarity(),
    "dot_raw": lambda m: m.DotProductSimilarity(normalize_embeddings=False),
    "l1_raw": lambda m: m.LpDistance(p=1, normalize_embeddings=False),
    "lp_cubed": lambda m: m.LpDistance(power=3),
    "snr": lambda m: m.SNRDistance(),
}
# Distances whose values are exact on small integers (no normalisation, no division).
EXACT_ON_INTEGERS = ["lp_raw", "lp_raw_squared", "dot_raw", "l1_raw"]


def _pair(name):
    return CUSTOM_DISTANCES[name](metricssl_distances), CUSTOM_DISTANCES[name](pml_distances)


def _by_value_then_index(mat, k, is_inverted, exclude_self):
    """The documented order, brute force: k best per row, equal values by ascending index."""
    mat = (-mat if is_inverted else mat).double()
    if exclude_self:
        mat[torch.arange(len(mat)), torch.arange(len(mat))] = float("inf")
    return torch.sort(mat, dim=1, stable=True).indices[:, :k]


@pytest.mark.parametrize("name", list(CUSTOM_DISTANCES))
@pytest.mark.parametrize("nq, nr, d", [(1, 9, 3), (40, 70, 8), (130, 90, 33)])
def test_custom_knn_matches_pml(name, nq, nr, d):
    """Random data (no ties): PML's neighbours and values, for every chunking."""
    q, r = _data(nq, nr, d, seed=nq)
    ref = torch.cat([q, r])
    ours_distance, pml_distance = _pair(name)
    k = min(5, nr - 1)
    for reference, flag in ((r, False), (ref, True)):
        expected = pml.CustomKNN(pml_distance)(q, k, reference, flag)
        for batch_size in (None, 7, 1000):
            got = inference.CustomKNN(ours_distance, batch_size)(q, k, reference, flag)
            assert got[1].dtype == torch.int64 and got[0].dtype == expected[0].dtype
            assert torch.equal(got[1], expected[1]), (batch_size, flag)
            torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("name", EXACT_ON_INTEGERS)
@pytest.mark.parametrize("k", [1, 4, 29])
def test_custom_knn_orders_ties_by_reference_index(name, k):
    """Integer-valued data ties everywhere: PML's values, and equal values by ascending
    reference index (PML's order among them is torch.topk's)."""
    g = torch.Generator().manual_seed(k)
    x = torch.randint(-2, 3, (60, 3), generator=g).float()
    q = x[:45]
    ours_distance, pml_distance = _pair(name)
    exact = ours_distance(q.double(), x.double())  # exact on small integers
    for flag in (False, True):
        expected = pml.CustomKNN(pml_distance)(q, k, x, flag)
        order = _by_value_then_index(exact, k, ours_distance.is_inverted, flag)
        for batch_size in (None, 8):
            values, indices = inference.CustomKNN(ours_distance, batch_size)(q, k, x, flag)
            torch.testing.assert_close(values, expected[0])
            assert torch.equal(indices, order)
    # The data does tie at the cut: the order is decided by the tie rule, not by the values.
    selected = exact.gather(1, order)
    assert (selected[:, 1:] == selected[:, :-1]).any() or k == 1


def test_custom_knn_runs_any_distance_in_its_dtype_with_gradient():
    """The distance object's own matrix (float64, a user subclass, collect_stats): its values,
    dtype and gradient, as PML's CustomKNN (which accepts any such distance object)."""

    class Chebyshev(metricssl_distances.LpDistance):
        def compute_mat(self, query_emb, ref_emb):
            return (query_emb[:, None] - ref_emb[None]).abs().amax(dim=2)

    q, r = _data(30, 50, 6)
    for distance in (Chebyshev(), metricssl_distances.LpDistance(collect_stats=True)):
        got = inference.CustomKNN(distance, 4)(q, 6, r)
        expected = pml.CustomKNN(distance)(q, 6, r)
        assert torch.equal(got[1], expected[1])
        torch.testing.assert_close(got[0], expected[0])
    assert distance.final_avg_query_norm == pytest.approx(1.0)  # the distance did run
    q64 = q.double().requires_grad_()
    values, indices = inference.CustomKNN(metricssl_distances.CosineSimilarity())(
        q64, 3, r.double()
    )
    expected = pml.CustomKNN(pml_distances.CosineSimilarity())(q64, 3, r.double())
    assert values.dtype == torch.float64 and values.requires_grad
    assert torch.equal(indices, expected[1])
    torch.testing.assert_close(values, expected[0])
    values.sum().backward()
    assert q64.grad is not None and q64.grad.abs().sum() > 0


def test_custom_knn_edge_inputs_as_pml():
    q, r = _data(12, 20, 4)
    distance, pml_distance = _pair("lp")
    # reference=None: PML's distance compares the queries with themselves.
    got = inference.CustomKNN(distance)(q, 3, None)
    expected = pml.CustomKNN(pml_distance)(q, 3, None)
    assert torch.equal(got[1], expected[1]) and torch.equal(got[1][:, 0], torch.arange(12))
    # No queries: (0, k) results.
    values, indices = inference.CustomKNN(distance)(q[:0], 3, r)
    assert values.shape == indices.shape == (0, 3) and indices.dtype == torch.int64
    # k up to every other reference row.
    _, indices = inference.CustomKNN(distance)(q, 11, q, ref_includes_query=True)
    assert torch.equal(indices.sort(dim=1).values.sum(dim=1), 66 - torch.arange(12))


def test_custom_knn_errors():
    q, r = _data(10, 20, 4)
    knn = inference.CustomKNN(LpDistance())
    with pytest.raises(TypeError, match="distance"):
        inference.CustomKNN(pml_distances.LpDistance())
    with pytest.raises(ValueError, match="batch_size"):
        inference.CustomKNN(LpDistance(), batch_size=0)
    with pytest.raises(ValueError, match="k"):
        knn(q, 21, r)
    with pytest.raises(ValueError, match="k"):
        knn(q, 20, r, ref_includes_query=True)  # 19 other rows at most
    with pytest.raises(ValueError, match="ref_includes_query"):
        knn(r, 3, q, ref_includes_query=True)  # fewer reference rows than queries
    with pytest.raises(ValueError, match="embedding size"):
        knn(q, 3, r[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        knn(q, 3, torch.cat([r, torch.full((1, 4), float("nan"))]))
    with pytest.raises(ValueError, match="query"):
        knn(q[0], 3, r)


@pytest.mark.parametrize("name", ["lp", "cosine", "lp_raw_squared", "l1_raw"])
def test_custom_knn_in_accuracy_calculator_matches_pml(name):
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 5, (150,), generator=g)
    x = torch.randn(5, 16, generator=g)[labels] + torch.randn(150, 16, generator=g)
    ours_distance, pml_distance = _pair(name)
    ours = AccuracyCalculator(
        exclude=("NMI", "AMI"), k="max_bin_count", knn_func=inference.CustomKNN(ours_distance)
    )
    theirs = pml_ac.AccuracyCalculator(
        exclude=("NMI", "AMI"),
        k="max_bin_count",
        knn_func=pml.CustomKNN(pml_distance),
        device=torch.device("cpu"),
    )
    for args in ((x, labels), (x[:60], labels[:60], x[60:], labels[60:])):
        got, expected = ours.get_accuracy(*args), theirs.get_accuracy(*args)
        assert got.keys() == expected.keys()
        for metric in got:
            assert got[metric] == pytest.approx(expected[metric], abs=1e-6), metric


def test_custom_knn_and_faiss_knn_rank_ties_as_the_engine():
    """One ranking rule: on tied integer data CustomKNN, FaissKNN (our index or the user's
    FAISS index, with PML's self-match removal) and the engine return the same neighbours,
    so AccuracyCalculator gives the same numbers with any of them."""
    g = torch.Generator().manual_seed(2)
    x = torch.randint(-2, 3, (200, 4), generator=g).float()
    labels = torch.randint(0, 3, (200,), generator=g)
    custom = inference.CustomKNN(LpDistance(normalize_embeddings=False, power=2))
    for k in (1, 7, 120):
        for flag in (False, True):
            expected = knn(x[:80], x, k, exclude_self=flag)
            for knn_func in (
                custom,
                inference.FaissKNN(),
                inference.FaissKNN(index_init_fn=faiss.IndexFlatL2),
            ):
                got = knn_func(x[:80], k, x, flag)
                assert torch.equal(got[1], expected[1]) and torch.equal(got[0], expected[0])
    default = AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count").get_accuracy(x, labels)
    with_custom = AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count", knn_func=custom)
    assert with_custom.get_accuracy(x, labels) == default


def test_get_topk_matches_pml():
    mat = torch.randn(5, 9)
    out = [(torch.zeros(5, 3), torch.zeros(5, 3, dtype=torch.long)) for _ in range(2)]
    inference.get_topk(*out[0], 3, True)(mat, 0, 5)
    pml.get_topk(*out[1], 3, True)(mat, 0, 5)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@pytest.mark.parametrize("kwargs", [{}, {"niter": 20}, {"niter": 5, "nredo": 3, "seed": 7}])
def test_faiss_kmeans(kwargs):
    # PML's kwargs go to faiss.Kmeans with PML's seeding: the same ids, and so the same
    # NMI/AMI through AccuracyCalculator(kmeans_func=...).
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(4).repeat_interleave(30)
    x = torch.randn(120, 6, generator=g) + 2 * torch.randn(4, 6, generator=g)[truth]
    ours = inference.FaissKMeans(**kwargs)(x, 4)
    theirs = pml.FaissKMeans(**kwargs)(x, 4)
    assert ours.dtype == theirs.dtype == torch.int64 and torch.equal(ours, theirs)
    assert torch.equal(inference.FaissKMeans(**kwargs)(x.numpy(), 4), ours)
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator as PMLCalc

    from metricssl.eval import AccuracyCalculator

    ours = AccuracyCalculator(include=("NMI", "AMI"), kmeans_func=inference.FaissKMeans(**kwargs))
    theirs = PMLCalc(include=("NMI", "AMI"), kmeans_func=pml.FaissKMeans(**kwargs))
    assert ours.get_accuracy(x, truth) == theirs.get_accuracy(x, truth)


def test_faiss_kmeans_refuses_unknown_keywords():
    with pytest.raises(TypeError, match="nitr"):
        inference.FaissKMeans(nitr=3)
    with pytest.raises(ValueError, match="nmb_clusters"):
        inference.FaissKMeans()(torch.randn(3, 2), 4)


def test_run_pca_matches_pml():
    x, _ = _data(nq=60, d=10)
    torch.testing.assert_close(inference.run_pca(x, 3), pml.run_pca(x, 3))
    with pytest.raises(ValueError, match="output_dimensionality"):
        inference.run_pca(x, 11)


@pytest.mark.parametrize(
    "ours_distance, pml_distance, threshold",
    [(CosineSimilarity(), PMLCosineSimilarity(), 0.3), (LpDistance(), PMLLpDistance(), 1.3)],
)
def test_match_finder_matches_pml(ours_distance, pml_distance, threshold):
    q, r = _data()
    ours = inference.MatchFinder(ours_distance, threshold)
    theirs = pml.MatchFinder(pml_distance, threshold)
    for ref in (None, r):
        a, b = ours.get_matching_pairs(q, ref), theirs.get_matching_pairs(q, ref)
        assert a.dtype == b.dtype == np.bool_ and (a == b).all() and 0 < a.sum() < a.size
        assert ours.get_matching_pairs(q, ref, return_tuples=True) == theirs.get_matching_pairs(
            q, ref, return_tuples=True
        )
    assert (ours.is_match(q, r[:40]) == theirs.is_match(q, r[:40])).all()
    assert ours.is_match(q[:1], r[:1]) == theirs.is_match(q[:1], r[:1])
    assert isinstance(ours.is_match(q[:1], r[:1]), bool)
    assert (
        ours.get_matching_pairs(q, r, threshold=0.0)
        == theirs.get_matching_pairs(q, r, threshold=0.0)
    ).all()


def test_match_finder_errors():
    with pytest.raises(TypeError, match="distance"):
        inference.MatchFinder("cosine")
    q, _ = _data()
    with pytest.raises(ValueError, match="threshold"):
        inference.MatchFinder(CosineSimilarity()).get_matching_pairs(q)


def _models():
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    ours = inference.InferenceModel(trunk, data_device="cpu")
    theirs = pml.InferenceModel(trunk, data_device=torch.device("cpu"))
    return ours, theirs


def test_inference_model_matches_pml(tmp_path):
    ours, theirs = _models()
    q, r = _data()
    torch.testing.assert_close(ours.get_embeddings(q), theirs.get_embeddings(q))
    for model in (ours, theirs):
        model.train_knn(r[:50], batch_size=16)
        model.add_to_knn(list(r[50:]))  # a list of tensors
    _same_knn(ours.get_nearest_neighbors(q, 5), theirs.get_nearest_neighbors(q, 5))
    assert (ours.get_matches(q) == theirs.get_matches(q)).all()
    assert ours.get_matches(q, r, 0.5, True) == theirs.get_matches(q, r, 0.5, True)
    assert (ours.is_match(q, r[:40]) == theirs.is_match(q, r[:40])).all()
    ours.save_knn_func(tmp_path / "knn.index")
    fresh, _ = _models()
    fresh.load_knn_func(tmp_path / "knn.index")
    _same_knn(fresh.get_nearest_neighbors(q, 5), theirs.get_nearest_neighbors(q, 5))


def test_inference_model_on_a_dataset():
    ours, theirs = _models()
    _, r = _data()
    dataset = torch.utils.data.TensorDataset(r, torch.zeros(len(r)))
    torch.testing.assert_close(
        ours.get_embeddings_from_tensor_or_dataset(dataset, 16),
        theirs.get_embeddings_from_tensor_or_dataset(dataset, 16),
    )
    with pytest.raises(TypeError, match="not supported"):
        ours.get_embeddings_from_tensor_or_dataset({"a": r}, 16)


def test_inference_model_arguments():
    trunk = torch.nn.Linear(8, 4)
    with pytest.raises(TypeError, match="trunk"):
        inference.InferenceModel(3)
    with pytest.raises(TypeError, match="match_finder"):
        inference.InferenceModel(trunk, match_finder=CosineSimilarity())
    with pytest.raises(TypeError, match="normalize_embeddings"):
        inference.InferenceModel(trunk, normalize_embeddings=1)
    with pytest.raises(TypeError, match="dtype"):
        inference.InferenceModel(trunk, dtype="float32")
    # dtype casts the inputs: a float32 batch reaches the float64 trunk as float64.
    model = inference.InferenceModel(trunk.double(), data_device="cpu", dtype=torch.float64)
    assert model.get_embeddings(torch.randn(3, 8)).dtype == torch.float64


def test_faiss_knn_as_accuracy_calculator_knn_func():
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(120, 8, generator=g), torch.randint(0, 4, (120,), generator=g)
    calc = AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count")
    with_faiss_knn = AccuracyCalculator(
        exclude=("NMI", "AMI"), k="max_bin_count", knn_func=inference.FaissKNN()
    )
    expected = calc.get_accuracy(x, labels)
    got = with_faiss_knn.get_accuracy(x, labels)
    assert got.keys() == expected.keys()
    for name in got:
        assert got[name] == pytest.approx(expected[name])


@pytest.mark.gpu
def test_faiss_knn_on_cuda():
    q, r = _data()
    d, i = inference.FaissKNN()(q.cuda(), 5, r.cuda())
    assert d.device.type == i.device.type == "cuda"
    _same_knn((d.cpu(), i.cpu()), pml.FaissKNN()(q, 5, r))


@pytest.mark.gpu
@pytest.mark.parametrize("name", EXACT_ON_INTEGERS + ["cosine"])
def test_custom_knn_on_cuda_equals_cpu(name):
    """Same neighbours and values on CUDA (small integers: exact, ties included; cosine: no
    ties in this data), over several chunks, results on the query's device."""
    x = torch.randint(-2, 3, (120, 3), generator=torch.Generator().manual_seed(0)).float()
    if name == "cosine":
        x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    distance, _ = _pair(name)
    for flag in (False, True):
        cpu = inference.CustomKNN(distance, batch_size=16)(x[:70], 9, x, flag)
        gpu = inference.CustomKNN(distance, batch_size=16)(x[:70].cuda(), 9, x.cuda(), flag)
        assert gpu[0].device.type == gpu[1].device.type == "cuda"
        assert torch.equal(gpu[1].cpu(), cpu[1])
        torch.testing.assert_close(gpu[0].cpu(), cpu[0])
