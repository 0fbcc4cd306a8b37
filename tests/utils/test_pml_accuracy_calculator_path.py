"""utils.accuracy_calculator: PML's import path, PML's metric helpers (same values as PML's on
random neighbour tables), a custom metric written as in PML's documentation, and the
calculator working where FAISS cannot be imported."""

import json
import math
import subprocess
import sys

import pytest
import torch
from pytorch_metric_learning.utils import accuracy_calculator as pml

from metricssl.eval.accuracy_calculator import AccuracyCalculator as EvalAccuracyCalculator
from metricssl.utils import accuracy_calculator as ours


def test_import_path():
    assert ours.AccuracyCalculator is EvalAccuracyCalculator
    assert ours.EQUALITY is pml.EQUALITY
    from metricssl.utils.inference import FaissKMeans, FaissKNN

    assert ours.FaissKNN is FaissKNN and ours.FaissKMeans is FaissKMeans


def _table(multi_dim=False, ref_includes_query=False, seed=0, nq=30, nr=50, k=12):
    """Query labels, reference labels and the labels of k neighbours per query."""
    g = torch.Generator().manual_seed(seed)
    shape = (nq, 2) if multi_dim else (nq,)
    query_labels = torch.randint(0, 4, shape, generator=g)
    ref_labels = torch.randint(0, 4, (nr,) + shape[1:], generator=g)
    ref_labels[0] = 7 if not multi_dim else torch.tensor([7, 7])  # a label no query has
    query_labels[-1] = 9 if not multi_dim else torch.tensor([9, 9])  # a lone query label
    if ref_includes_query:
        ref_labels = torch.cat([query_labels, ref_labels])
    order = torch.rand(nq, len(ref_labels), generator=g).argsort(dim=1)[:, :k]
    return query_labels, ref_labels, ref_labels[order]


def _close(a, b):
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    else:
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12, nan_ok=True)


def _equality_fn(multi_dim):
    if not multi_dim:
        return pml.EQUALITY
    return lambda x, y: (x == y).all(dim=-1)


@pytest.mark.parametrize("ref_includes_query", [False, True])
@pytest.mark.parametrize("averaging", [(False, False), (True, False), (False, True)])
def test_metric_helpers_match_pml(ref_includes_query, averaging):
    avg_of_avgs, per_class = averaging
    q, r, knn_labels = _table(ref_includes_query=ref_includes_query)
    eq = pml.EQUALITY
    counts = ours.get_label_match_counts(q, r, eq)
    expected_counts = pml.get_label_match_counts(q, r, eq)
    assert all(torch.equal(a, b) for a, b in zip(counts, expected_counts))
    lone, mask = ours.get_lone_query_labels(q, counts, ref_includes_query, eq)
    pml_lone, pml_mask = pml.get_lone_query_labels(q, counts, ref_includes_query, eq)
    assert torch.equal(lone, pml_lone) and torch.equal(mask, pml_mask) and not mask.all()
    knn, ql = ours.try_getting_not_lone_labels(knn_labels, q, mask)
    gt = ql[:, None]
    for name, args in [
        ("precision_at_k", (knn, gt, 1, avg_of_avgs, per_class, eq)),
        ("precision_at_k", (knn, gt, 5, avg_of_avgs, per_class, eq)),
        ("r_precision", (knn, gt, ref_includes_query, counts, avg_of_avgs, per_class, eq)),
        (
            "mean_average_precision",
            (knn, gt, ref_includes_query, counts, avg_of_avgs, per_class, eq),
        ),
        ("mean_reciprocal_rank", (knn, gt, avg_of_avgs, per_class, eq)),
    ]:
        _close(getattr(ours, name)(*args), getattr(pml, name)(*args))
    at_r = (knn, gt, ref_includes_query, counts, avg_of_avgs, per_class, eq)
    _close(
        ours.mean_average_precision(*at_r, at_r=True),
        pml.mean_average_precision(*at_r, at_r=True),
    )
    for a, b in zip(
        ours.get_relevance_mask(knn.shape[:2], gt, ref_includes_query, counts),
        pml.get_relevance_mask(knn.shape[:2], gt, ref_includes_query, counts),
    ):
        assert torch.equal(a, b)


def test_metric_helpers_with_multi_dimensional_labels():
    q, r, knn_labels = _table(multi_dim=True, ref_includes_query=True)
    fn = _equality_fn(True)
    counts = ours.get_label_match_counts(q, r, fn)
    expected = pml.get_label_match_counts(q, r, fn)
    assert all(torch.equal(a, b) for a, b in zip(counts, expected))
    # The default comparison takes (n, label_dims) labels too.
    assert torch.equal(
        ours.get_label_match_counts(q, r, pml.EQUALITY)[1],
        pml.get_label_match_counts(q, r, pml.EQUALITY)[1],
    )
    _, mask = pml.get_lone_query_labels(q, counts, True, fn)
    assert torch.equal(ours.get_lone_query_labels(q, counts, True, fn)[1], mask)
    gt = q[mask][:, None]
    knn = knn_labels[mask]
    for avg_of_avgs in (False, True):
        args = (knn, gt, True, counts, avg_of_avgs, False, fn)
        _close(ours.r_precision(*args), pml.r_precision(*args))
        _close(
            ours.mean_average_precision(*args, at_r=True),
            pml.mean_average_precision(*args, at_r=True),
        )


def test_small_helpers_match_pml():
    labels = torch.tensor([3, 1, 3, 2, 1])
    assert torch.equal(ours.get_unique_labels(labels), pml.get_unique_labels(labels))
    values = torch.rand(5, dtype=torch.float64)
    for avg_of_avgs, per_class in ((False, False), (True, False), (False, True)):
        _close(
            ours.maybe_get_avg_of_avgs(values, labels[:, None], avg_of_avgs, per_class),
            pml.maybe_get_avg_of_avgs(values, labels[:, None], avg_of_avgs, per_class),
        )
    per_class = ours.nan_accuracy(labels, True)
    assert len(per_class) == 5 and all(math.isnan(v) for v in per_class)
    assert math.isnan(ours.nan_accuracy(labels, False))
    nothing = torch.zeros(5, dtype=torch.bool)
    assert ours.try_getting_not_lone_labels(labels[:, None], labels, nothing) == (None, None)


class _PrecisionAtTwo:
    """A custom metric as PML's documentation writes it (``accuracy_calculator`` is the
    module of the library under test)."""

    accuracy_calculator = None

    def calculate_precision_at_2(self, knn_labels, query_labels, **kwargs):
        return self.accuracy_calculator.precision_at_k(
            knn_labels,
            query_labels[:, None],
            2,
            self.avg_of_avgs,
            self.return_per_class,
            self.label_comparison_fn,
        )

    def requires_knn(self):
        return super().requires_knn() + ["precision_at_2"]


class _Ours(_PrecisionAtTwo, ours.AccuracyCalculator):
    accuracy_calculator = ours


class _Theirs(_PrecisionAtTwo, pml.AccuracyCalculator):
    accuracy_calculator = pml


def test_custom_metric_written_as_in_pml_docs():
    g = torch.Generator().manual_seed(4)
    x, labels = torch.randn(150, 8, generator=g), torch.randint(0, 5, (150,), generator=g)
    kwargs = dict(include=("precision_at_1", "precision_at_2"), k=10, device=torch.device("cpu"))
    got = _Ours(**kwargs).get_accuracy(x, labels)
    expected = _Theirs(**kwargs).get_accuracy(x, labels)
    assert got.keys() == expected.keys()
    for name in got:
        assert got[name] == pytest.approx(expected[name])


_WITHOUT_FAISS = r"""
import json, sys
sys.modules["faiss"] = None  # any "import faiss" now raises ImportError
import torch
from metricssl.utils.accuracy_calculator import AccuracyCalculator
g = torch.Generator().manual_seed(0)
x, y = torch.randn(400, 16, generator=g), torch.randint(0, 6, (400,), generator=g)
out = {"retrieval": AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count").get_accuracy(x, y)}
try:
    AccuracyCalculator(include=("NMI",)).get_accuracy(x, y)
    out["clustering"] = "no error"
except ImportError as err:
    out["clustering"] = str(err)
print(json.dumps(out))
"""


def test_accuracy_calculator_without_faiss():
    """Retrieval metrics need no FAISS (the torch search covers them); k-means metrics
    explain what is missing."""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_FAISS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 16, generator=g), torch.randint(0, 6, (400,), generator=g)
    expected = ours.AccuracyCalculator(exclude=("NMI", "AMI"), k="max_bin_count").get_accuracy(x, y)
    assert out["retrieval"].keys() == expected.keys()
    for name, value in expected.items():
        assert out["retrieval"][name] == pytest.approx(value)
    assert "faiss" in out["clustering"].lower() and "kmeans_func" in out["clustering"]
