"""AccuracyCalculator against PML's on the same inputs: metric values, ties, k modes, averaging,
custom comparisons and metrics, input types; plus our metrics and the error cases."""

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils import accuracy_calculator as pml_ac
from pytorch_metric_learning.utils.inference import CustomKNN, FaissKNN

from metricssl.core import chunking
from metricssl.eval.accuracy_calculator import (
    ALL_METRICS,
    PML_METRICS,
    AccuracyCalculator,
)
from metricssl.eval.clustering import KMeansPlusPlus
from metricssl.eval.knn import ExactKNN

RETRIEVAL = tuple(m for m in PML_METRICS if m not in ("NMI", "AMI"))
CPU = torch.device("cpu")


@pytest.fixture
def small_budget():
    """A tiny memory budget, so every search runs in many query chunks."""
    before = chunking.get_memory_budget()
    chunking.set_memory_budget(40_000)
    yield
    chunking.set_memory_budget(before)


def _close(a, b, name):
    # Per-query values equal PML's exactly; means may differ in the last bits (summation order).
    tol = 1e-6 if name == "mean_reciprocal_rank" else 1e-12
    if isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), name
        for x, y in zip(a, b):
            _close(x, y, name)
        return
    if math.isnan(b):
        assert math.isnan(a), name
    else:
        assert a == pytest.approx(b, rel=tol, abs=tol), name


def assert_parity(query, labels, reference=None, ref_labels=None, riq=False, **kwargs):
    kwargs.setdefault("exclude", ("NMI", "AMI"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = AccuracyCalculator(**kwargs).get_accuracy(query, labels, reference, ref_labels, riq)
    theirs = pml_ac.AccuracyCalculator(device=CPU, **kwargs).get_accuracy(
        query, labels, reference, ref_labels, riq
    )
    assert list(ours) == list(theirs)
    for name in theirs:
        _close(ours[name], theirs[name], name)
    return ours


def _data(n, d, n_classes, seed=0, integer=False):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    if integer:  # exact distances with many ties
        x = torch.randint(-2, 3, (n, d), generator=g).float()
    else:
        x = torch.randn(n, d, generator=g)
    return x, labels


@pytest.mark.parametrize("k", [None, "max_bin_count", 1, 5])
@pytest.mark.parametrize("integer", [False, True])
def test_parity_query_is_reference(k, integer, small_budget):
    x, y = _data(150, 4, 6, seed=1, integer=integer)
    assert_parity(x, y, k=k)


@pytest.mark.parametrize("k", [None, "max_bin_count", 3])
@pytest.mark.parametrize("integer", [False, True])
def test_parity_separate_reference(k, integer, small_budget):
    q, qy = _data(120, 5, 7, seed=2, integer=integer)
    r, ry = _data(200, 5, 5, seed=3, integer=integer)  # query classes 5, 6 are lone
    assert_parity(q, qy, r, ry, k=k)


@pytest.mark.parametrize("k", [None, "max_bin_count", 4])
def test_parity_ref_includes_query_with_duplicates(k, small_budget):
    q, qy = _data(80, 3, 4, seed=4, integer=True)
    r = torch.cat([q, q[:30], torch.randn(50, 3)])  # duplicated embeddings tie exactly
    ry = torch.cat([qy, qy[:30], torch.randint(0, 4, (50,))])
    assert_parity(q, qy, r, ry, True, k=k)


@pytest.mark.parametrize("option", [{"avg_of_avgs": True}, {"return_per_class": True}])
@pytest.mark.parametrize("k", [None, "max_bin_count", 2])
def test_parity_class_averages(option, k):
    q, qy = _data(150, 6, 5, seed=5)
    r, ry = _data(180, 6, 6, seed=6)
    assert_parity(q, qy, k=k, **option)
    assert_parity(q, qy, r, ry, k=k, **option)


@pytest.mark.parametrize(
    "labels",
    [
        torch.zeros(60, dtype=torch.long),  # one class
        torch.arange(60) // 2,  # many classes of two
        torch.cat([torch.arange(30), torch.zeros(30, dtype=torch.long)]),  # singletons + one
    ],
    ids=["one-class", "pairs", "singletons"],
)
@pytest.mark.parametrize("k", [None, "max_bin_count"])
def test_parity_label_layouts(labels, k):
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(7))
    assert_parity(x, labels, k=k)
    assert_parity(x, labels, k=k, return_per_class=True)


def test_all_queries_lone_gives_nan():
    x = torch.randn(20, 3)
    with pytest.warns(UserWarning, match="None of the query labels"):
        out = AccuracyCalculator(include=RETRIEVAL).get_accuracy(x, torch.arange(20))
    assert all(math.isnan(v) for v in out.values())
    with pytest.warns(UserWarning, match="None of the query labels"):
        out = AccuracyCalculator(include=RETRIEVAL, return_per_class=True).get_accuracy(
            x, torch.arange(4).repeat(5), torch.randn(5, 3), torch.full((5,), 9)
        )
    assert all(len(v) == 4 and all(math.isnan(e) for e in v) for v in out.values())


def test_parity_custom_label_comparison_and_2d_labels():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(100, 4, generator=g)
    labels = torch.randint(0, 3, (100, 2), generator=g)
    ref = torch.randn(150, 4, generator=g)
    ref_labels = torch.randint(0, 3, (150, 2), generator=g)

    def fn(a, b):
        return (a[..., 0] == b[..., 0]) & (a[..., 1] != b[..., 1])

    for k in [None, "max_bin_count", 5]:
        assert_parity(x, labels, ref, ref_labels, k=k, label_comparison_fn=fn)
        assert_parity(x, labels, k=k, label_comparison_fn=fn)


def test_parity_float64_numpy_and_mixed_inputs():
    x, y = _data(100, 6, 4, seed=9)
    ours_torch = assert_parity(x.double(), y)
    ours_numpy = AccuracyCalculator(exclude=("NMI", "AMI")).get_accuracy(x.numpy(), y.numpy())
    assert ours_numpy == ours_torch
    ref, ref_y = _data(80, 6, 4, seed=10)
    mixed = AccuracyCalculator(exclude=("NMI", "AMI")).get_accuracy(
        x.numpy(), y, ref, ref_y.numpy().astype(np.int32)
    )
    assert mixed == AccuracyCalculator(exclude=("NMI", "AMI")).get_accuracy(x, y, ref, ref_y)


@pytest.mark.parametrize("knn_func", [ExactKNN(), FaissKNN(), CustomKNN(distance=None)])
def test_knn_func_is_used_like_pml(knn_func):
    if isinstance(knn_func, CustomKNN):
        from pytorch_metric_learning.distances import LpDistance

        knn_func = CustomKNN(LpDistance(normalize_embeddings=False))
    x, y = _data(90, 4, 3, seed=11)
    calc = AccuracyCalculator(include=RETRIEVAL, k="max_bin_count")
    default = calc.get_accuracy(x, y)
    with_func = AccuracyCalculator(include=RETRIEVAL, k="max_bin_count", knn_func=knn_func)
    with_func = with_func.get_accuracy(x, y)
    for name in default:
        _close(with_func[name], default[name], name)


def test_subclass_metric_gets_pml_kwargs():
    """A PML-style custom metric (``calculate_<name>`` + ``requires_knn``) works unchanged."""

    def make(base):
        class WithCustom(base):
            def calculate_first_hit(self, knn_labels, query_labels, not_lone_query_mask, **kw):
                hit = knn_labels[:, 0] == query_labels
                return hit[not_lone_query_mask].float().mean().item()

            def requires_knn(self):
                return super().requires_knn() + ["first_hit"]

        return WithCustom

    x, y = _data(100, 4, 5, seed=12)
    ours = make(AccuracyCalculator)(exclude=("NMI", "AMI")).get_accuracy(x, y)
    theirs = make(pml_ac.AccuracyCalculator)(exclude=("NMI", "AMI"), device=CPU).get_accuracy(x, y)
    assert ours["first_hit"] == pytest.approx(theirs["first_hit"])
    assert ours["first_hit"] == pytest.approx(ours["precision_at_1"])


def test_default_keys_are_pmls_and_ours_are_opt_in():
    x, y = _data(80, 4, 3, seed=13)
    assert list(AccuracyCalculator().get_accuracy(x, y)) == sorted(PML_METRICS)
    out = AccuracyCalculator().get_accuracy(x, y, include=("recall_at_k", "ARI"))
    assert list(out) == ["ARI", "recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8"]
    out = AccuracyCalculator(include=("precision_at_1",)).get_accuracy(x, y, include=("NMI",))
    assert out == {}  # as PML: a call can only narrow the constructor's metrics


def test_recall_at_k_definition():
    x, y = _data(70, 4, 4, seed=14)
    calc = AccuracyCalculator(include=("recall_at_k", "precision_at_1"), recall_at_k=(1, 3))
    out = calc.get_accuracy(x, y)
    assert out["recall_at_1"] == out["precision_at_1"]
    d = torch.cdist(x, x).fill_diagonal_(float("inf"))
    top3 = d.topk(3, largest=False).indices
    expected = (y[top3] == y[:, None]).any(dim=1).double().mean().item()
    assert out["recall_at_3"] == pytest.approx(expected)


def test_knn_accuracy_matches_brute_force_and_shared_search():
    g = torch.Generator().manual_seed(15)
    x = torch.randn(120, 8, generator=g)
    y = torch.randint(0, 4, (120,), generator=g)
    r = torch.randn(200, 8, generator=g)
    ry = torch.randint(0, 4, (200,), generator=g)
    metrics = ("knn_accuracy_weighted", "knn_accuracy_majority")
    out = AccuracyCalculator(include=metrics, knn_k=7, knn_temperature=0.2).get_accuracy(
        x, y, r, ry
    )
    sims = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(r, dim=1).T
    top = sims.topk(7, dim=1)
    weighted = torch.zeros(120, 4).scatter_add_(1, ry[top.indices], torch.exp(top.values / 0.2))
    majority = torch.zeros(120, 4).scatter_add_(1, ry[top.indices], torch.ones(120, 7))
    assert out["knn_accuracy_weighted"] == pytest.approx(
        (weighted.argmax(1) == y).double().mean().item()
    )
    assert out["knn_accuracy_majority"] == pytest.approx(
        (majority.argmax(1) == y).double().mean().item()
    )
    # Unit vectors: the L2 search is reused for the vote; the result is the same.
    xn, rn = torch.nn.functional.normalize(x, dim=1), torch.nn.functional.normalize(r, dim=1)
    shared = AccuracyCalculator(include=metrics, knn_k=7, knn_temperature=0.2).get_accuracy(
        xn, y, rn, ry
    )
    assert shared == out


def test_clustering_metrics_on_planted_clusters():
    g = torch.Generator().manual_seed(16)
    y = torch.randint(0, 4, (400,), generator=g)
    x = 20 * torch.randn(4, 8, generator=g)[y] + torch.randn(400, 8, generator=g)
    # The default is PML's k-means (random initial centroids): its NMI/AMI are PML's ...
    ours = AccuracyCalculator(include=("NMI", "AMI")).get_accuracy(x, y)
    theirs = pml_ac.AccuracyCalculator(include=("NMI", "AMI"), device=CPU).get_accuracy(x, y)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-12)
    # ... and k-means++ on request finds every planted cluster.
    plus = AccuracyCalculator(include=("NMI", "AMI", "ARI"), kmeans_func=KMeansPlusPlus(seed=0))
    assert plus.get_accuracy(x, y) == pytest.approx({"AMI": 1.0, "ARI": 1.0, "NMI": 1.0})
    seeded = AccuracyCalculator(include=("NMI",), seed=3)
    assert seeded.get_accuracy(x, y) == seeded.get_accuracy(x, y)  # reproducible


def test_kmeans_func_is_used():
    calls = []

    def kmeans_func(x, n):
        calls.append(n)
        return torch.zeros(len(x), dtype=torch.long)

    x, y = _data(50, 3, 5, seed=17)
    out = AccuracyCalculator(include=("NMI",), kmeans_func=kmeans_func).get_accuracy(x, y)
    assert calls == [5] and out["NMI"] == pytest.approx(0.0)


def test_k_larger_than_reference_set_is_clipped_with_a_warning():
    x, y = _data(40, 3, 3, seed=18)
    with pytest.warns(UserWarning, match="exceeds"):
        big = AccuracyCalculator(include=RETRIEVAL, k=500).get_accuracy(x, y)
    assert big == AccuracyCalculator(include=RETRIEVAL, k=None).get_accuracy(x, y)


def test_k_below_max_bin_count_warns_for_r_metrics():
    x, y = _data(40, 3, 2, seed=19)
    with pytest.warns(UserWarning, match="max bin count"):
        AccuracyCalculator(include=("r_precision",), k=2).get_accuracy(x, y)


def test_device_argument_and_empty_metric_set():
    x, y = _data(30, 3, 3, seed=20)
    assert AccuracyCalculator(device="cpu", include=("precision_at_1",)).get_accuracy(x, y)
    assert (
        AccuracyCalculator(include=("precision_at_1",)).get_accuracy(
            x, y, exclude=("precision_at_1",)
        )
        == {}
    )


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"include": ("precision_at_2",)}, ValueError, "precision_at_2"),
        ({"exclude": ("nmi",)}, ValueError, "nmi"),
        ({"include": "NMI"}, TypeError, "include"),
        ({"k": 0}, ValueError, "k must"),
        ({"k": "max"}, ValueError, "k must"),
        ({"k": True}, ValueError, "k must"),
        ({"k": 2.5}, ValueError, "k must"),
        ({"avg_of_avgs": True, "return_per_class": True}, ValueError, "mutually exclusive"),
        ({"avg_of_avgs": 1}, TypeError, "avg_of_avgs"),
        ({"label_comparison_fn": 3, "exclude": ("NMI", "AMI")}, TypeError, "label_comparison"),
        ({"knn_func": "faiss"}, TypeError, "knn_func"),
        ({"device": 0}, TypeError, "device"),
        ({"recall_at_k": 4}, TypeError, "recall_at_k"),
        ({"recall_at_k": (0, 1)}, ValueError, "recall_at_k"),
        ({"recall_at_k": ()}, ValueError, "recall_at_k"),
        ({"knn_k": 0}, ValueError, "knn_k"),
        ({"knn_temperature": 0.0}, ValueError, "knn_temperature"),
        ({"seed": -1}, ValueError, "seed"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_constructor_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        AccuracyCalculator(**kwargs)


def test_custom_comparison_with_class_metrics_is_unsupported():
    with pytest.raises(NotImplementedError, match="NMI"):
        AccuracyCalculator(label_comparison_fn=torch.eq.__call__)
    calc = AccuracyCalculator(exclude=("NMI", "AMI"), label_comparison_fn=lambda a, b: a == b)
    with pytest.raises(NotImplementedError, match="knn_accuracy_weighted"):
        calc.get_accuracy(torch.randn(5, 2), torch.zeros(5), include=("knn_accuracy_weighted",))


def test_get_accuracy_errors():
    calc = AccuracyCalculator(include=RETRIEVAL)
    x, y = _data(20, 4, 2, seed=21)
    with pytest.raises(ValueError, match="query_labels has length 19"):
        calc.get_accuracy(x, y[:19])
    with pytest.raises(ValueError, match="reference_labels has length"):
        calc.get_accuracy(x, y, x, y[:5])
    with pytest.raises(ValueError, match="embedding size"):
        calc.get_accuracy(x, y, torch.randn(20, 5), y)
    bad = x.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="query contains NaN or Inf"):
        calc.get_accuracy(bad, y)
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="reference contains NaN or Inf"):
        calc.get_accuracy(x, y, bad, y)
    with pytest.raises(ValueError, match="ref_includes_query"):
        calc.get_accuracy(x, y, torch.randn(30, 4), torch.zeros(30), ref_includes_query=True)
    with pytest.raises(ValueError, match="unknown metric"):
        calc.get_accuracy(x, y, include=("recall",))
    with pytest.raises(ValueError, match="2D"):
        calc.get_accuracy(x[0], y[:1])
    with pytest.raises(ValueError, match="empty"):
        calc.get_accuracy(x[:0], y[:0])
    with pytest.raises(TypeError, match="query must be"):
        calc.get_accuracy(x.tolist(), y)
    with pytest.raises(ValueError, match="too large"):
        calc.get_accuracy(x * 1e30, y)


def test_all_metrics_run_together(small_budget):
    x, y = _data(90, 5, 4, seed=22)
    out = AccuracyCalculator(include=ALL_METRICS, k=None).get_accuracy(x, y)
    assert len(out) == len(ALL_METRICS) - 1 + 4  # recall_at_k gives four keys
    assert all(0.0 <= v <= 1.0 for k, v in out.items() if k not in ("AMI", "ARI"))


@pytest.mark.gpu
@pytest.mark.parametrize("k", [None, "max_bin_count", 3])
def test_cuda_matches_cpu(k):
    x, y = _data(300, 6, 5, seed=23, integer=True)  # exact distances: same order everywhere
    metrics = RETRIEVAL + ("recall_at_k",)
    cpu = AccuracyCalculator(include=metrics, k=k).get_accuracy(x, y)
    cuda = AccuracyCalculator(include=metrics, k=k).get_accuracy(x.cuda(), y.cuda())
    for name in cpu:
        _close(cuda[name], cpu[name], name)
    on_device = AccuracyCalculator(include=metrics, k=k, device="cuda").get_accuracy(x, y)
    assert on_device == cuda


def test_multidimensional_labels_with_default_equality():
    """PML errors here; rows are classes (equal when every entry is equal)."""
    x, y = _data(100, 3, 4, seed=24)
    calc = AccuracyCalculator(exclude=("NMI", "AMI"))
    as_1d = calc.get_accuracy(x, y)
    assert calc.get_accuracy(x, y[:, None]) == as_1d
    pairs = torch.stack([y // 2, y % 2], dim=1)  # the same 4 classes as rows
    assert calc.get_accuracy(x, pairs) == as_1d
    both = AccuracyCalculator(include=("NMI", "knn_accuracy_majority"), knn_k=5)
    assert both.get_accuracy(x, pairs) == pytest.approx(both.get_accuracy(x, y))


_ARANGE = torch.arange(10).unsqueeze(1)
_TIED = torch.tensor([[10], [10], [20], [20]])


@pytest.mark.parametrize(
    "query",
    [_ARANGE, _ARANGE.float(), _ARANGE.numpy(), _ARANGE.float() + 100, _ARANGE.double()],
    ids=["int64", "float32", "numpy", "offset", "float64"],
)
def test_issue_reproducers_query_equals_reference(query):
    # 1-D integer-valued data once took an int8 kernel that read garbage (P@1 0.0-0.2).
    labels = np.arange(10) if isinstance(query, np.ndarray) else torch.arange(10)
    assert_parity(query, labels, query, labels, False)
    scores = AccuracyCalculator(exclude=("NMI", "AMI")).get_accuracy(query, labels, query, labels)
    assert all(v == 1.0 for v in scores.values()), scores


@pytest.mark.parametrize("emb", [_TIED, _TIED.float()], ids=["int64", "float32"])
def test_issue_reproducer_self_is_the_item_removed_among_ties(emb):
    # Rows 0 and 1 tie at distance 0 with different labels: each query's own row is the one
    # left out, so its only neighbour has the other label.
    labels = torch.tensor([1, 0, 1, 0])
    calc = AccuracyCalculator(include=("precision_at_1",))
    assert calc.get_accuracy(emb, labels) == {"precision_at_1": 0.0}
    assert_parity(emb, labels, include=("precision_at_1",))


def test_k_warnings_are_also_logged_on_pmls_logger(caplog):
    # PML logs these warnings (c_f.LOGGER.warning); code that captures logs must see ours too.
    from metricssl.utils import common_functions as c_f

    x, y = _data(40, 3, 2, seed=19)
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        with pytest.warns(UserWarning, match="max bin count"):
            AccuracyCalculator(include=("r_precision",), k=2).get_accuracy(x, y)
    assert [r.name for r in caplog.records] == [c_f.LOGGER_NAME]
    assert "max bin count" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=c_f.LOGGER_NAME):
        with pytest.warns(UserWarning, match="None of the query labels"):
            AccuracyCalculator(include=("precision_at_1",)).get_accuracy(
                x[:5], torch.zeros(5), x[5:], torch.ones(35)
            )
    assert "None of the query labels" in caplog.text


def test_default_clustering_logs_like_pmls_kmeans(caplog):
    from metricssl.utils import common_functions as c_f

    x, y = _data(40, 3, 2, seed=23)
    with caplog.at_level(logging.INFO, logger=c_f.LOGGER_NAME):
        AccuracyCalculator(include=("NMI",)).get_accuracy(x, y)
    assert "running k-means clustering with k=2" in caplog.text


class _WithCustomMetric(AccuracyCalculator):
    def calculate_fancy(self, knn_labels, query_labels, **kwargs):
        return 0.5

    def requires_knn(self):
        return super().requires_knn() + ["fancy"]


@pytest.mark.parametrize(
    "init, call",
    [
        ({}, {}),
        ({}, {"exclude": ("NMI", "AMI")}),
        ({"include": ("precision_at_1", "r_precision")}, {}),
        ({"exclude": ("AMI",)}, {"include": ("NMI", "precision_at_1")}),
    ],
)
def test_get_function_dict_names_match_pml(init, call):
    ours = AccuracyCalculator(**init).get_function_dict(**call)
    theirs = pml_ac.AccuracyCalculator(**init).get_function_dict(**call)
    assert list(ours) == list(theirs)


@pytest.mark.parametrize(
    "init",
    [{}, {"avg_of_avgs": True}, {"return_per_class": True}, {"exclude": ("NMI", "AMI")}],
)
@pytest.mark.parametrize("lone", ["none", "some", "all"])
@pytest.mark.parametrize("counts_as_lists", [False, True])
def test_get_function_dict_functions_give_pmls_values(init, lone, counts_as_lists):
    # PML's own test calls AC._get_accuracy(AC.get_function_dict(), knn_labels=..., ...).
    g = torch.Generator().manual_seed(22)
    query_labels = torch.randint(0, 4, (30,), generator=g)
    knn_labels = torch.randint(0, 4, (30, 9), generator=g)
    mask = {"none": torch.ones(30), "some": torch.arange(30) % 3 > 0, "all": torch.zeros(30)}
    kwargs = {
        "query_labels": query_labels,
        "knn_labels": knn_labels,
        "label_counts": pml_ac.get_label_match_counts(query_labels, query_labels, torch.eq),
        "not_lone_query_mask": mask[lone].bool(),
        "ref_includes_query": True,
        "cluster_labels": torch.randint(0, 4, (30,), generator=g),
    }
    if counts_as_lists:  # PML's own test passes label_counts as Python lists
        kwargs["label_counts"] = tuple(x.tolist() for x in kwargs["label_counts"])
    ours = AccuracyCalculator(**init)
    theirs = pml_ac.AccuracyCalculator(**init, device=torch.device("cpu"))
    a = ours._get_accuracy(ours.get_function_dict(), **kwargs)
    b = theirs._get_accuracy(theirs.get_function_dict(), **kwargs)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, err_msg=name)


def test_get_function_dict_keeps_custom_methods_and_refuses_unknown_names():
    calc = _WithCustomMetric(exclude=("NMI", "AMI"))
    functions = calc.get_function_dict()
    pml_names = list(pml_ac.AccuracyCalculator(exclude=("NMI", "AMI")).get_function_dict())
    assert list(functions) == sorted(pml_names + ["fancy"])
    assert functions["fancy"].__func__ is _WithCustomMetric.calculate_fancy
    with pytest.raises(ValueError, match="include"):
        calc.get_function_dict(include=("precision_at_2",))
