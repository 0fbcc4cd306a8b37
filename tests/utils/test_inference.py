"""utils.inference against PML's on small random data: same neighbours, distances, matches,
clusters and conventions (dtypes, devices, the self-match removal)."""

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity as PMLCosineSimilarity
from pytorch_metric_learning.distances import LpDistance as PMLLpDistance
from pytorch_metric_learning.utils import inference as pml

from metricssl.distances.cosine_similarity import CosineSimilarity
from metricssl.distances.lp_distance import LpDistance
from metricssl.eval.accuracy_calculator import AccuracyCalculator
from metricssl.eval.clustering import clustering_scores
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
    for knn in (ours, theirs):
        knn.train(r[:50])
        knn.add(r[50:])
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


@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize(
    "ours_distance, pml_distance",
    [(CosineSimilarity(), PMLCosineSimilarity()), (LpDistance(), PMLLpDistance())],
)
def test_custom_knn_matches_pml(batch_size, ours_distance, pml_distance):
    q, r = _data()
    ref = torch.cat([q, r])
    for reference, flag in ((r, False), (ref, True)):
        d1, i1 = inference.CustomKNN(ours_distance, batch_size)(q, 5, reference, flag)
        d2, i2 = pml.CustomKNN(pml_distance, batch_size)(q, 5, reference, flag)
        assert torch.equal(i1, i2)
        torch.testing.assert_close(d1, d2)
    with pytest.raises(ValueError, match="k"):
        inference.CustomKNN(ours_distance)(q, 200, r)


def test_get_topk_matches_pml():
    mat = torch.randn(5, 9)
    out = [(torch.zeros(5, 3), torch.zeros(5, 3, dtype=torch.long)) for _ in range(2)]
    inference.get_topk(*out[0], 3, True)(mat, 0, 5)
    pml.get_topk(*out[1], 3, True)(mat, 0, 5)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_faiss_kmeans():
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(4).repeat_interleave(30)
    x = torch.randn(120, 6, generator=g) + 12 * torch.randn(4, 6, generator=g)[truth]
    ours = inference.FaissKMeans()(x, 4)
    theirs = pml.FaissKMeans()(x, 4)
    assert ours.dtype == theirs.dtype == torch.int64 and ours.shape == theirs.shape
    assert clustering_scores(truth, ours)["NMI"] == pytest.approx(1.0)
    # Reproducible (seeded), and numpy input works as PML's does.
    assert torch.equal(ours, inference.FaissKMeans()(x, 4))
    with pytest.raises(TypeError, match="gpu"):
        inference.FaissKMeans(gpu=1)
    with pytest.raises(ValueError, match="niter"):
        inference.FaissKMeans(niter=0)


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
