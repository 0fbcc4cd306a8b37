"""The chunked exact k-NN search: FAISS's neighbour order (distance, then index), ties,
self-exclusion, both selection paths, chunking, and bad input."""

import importlib

import faiss
import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.inference import FaissKNN

from metricssl.core import chunking
from metricssl.eval import AccuracyCalculator
from metricssl.eval.knn import (
    ColumnGroups,
    ExactKNN,
    ReferenceSet,
    group_ranks,
    knn,
    nearest,
    sortable_keys,
)

knn_module = importlib.import_module("metricssl.eval.knn")  # the package re-exports knn()


@pytest.fixture
def small_budget():
    before = chunking.get_memory_budget()
    chunking.set_memory_budget(20_000)
    yield
    chunking.set_memory_budget(before)


def brute_force(q, r, k, metric="l2", exclude_self=False):
    """Reference answer: full distance matrix, stable sort (ties by index)."""
    q64, r64 = q.double(), r.double()
    if metric == "l2":
        d = torch.cdist(q64, r64).pow(2)
    elif metric == "ip":
        d = -q64 @ r64.T
    else:
        d = -torch.nn.functional.normalize(q64, dim=1) @ torch.nn.functional.normalize(r64, dim=1).T
    if exclude_self:
        d[torch.arange(len(q)), torch.arange(len(q))] = float("inf")
    values, order = torch.sort(d, dim=1, stable=True)
    values = values if metric == "l2" else -values
    return values[:, :k], order[:, :k]


def integer_points(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (n, d), generator=g).float()  # exact distances, many ties


@pytest.mark.parametrize("k", [1, 4, 37, 59, 60])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_l2_matches_brute_force_with_ties(k, exclude_self, small_budget):
    q = integer_points(50, 3, seed=0)
    r = torch.cat([q, integer_points(10, 3, seed=1)])
    if exclude_self and k == 60:
        k = 59
    d, i = knn(q, r, k, exclude_self=exclude_self)
    ref_d, ref_i = brute_force(q, r, k, exclude_self=exclude_self)
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(d.double(), ref_d)


@pytest.mark.parametrize("k", [1, 10, 64])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_faiss_path_matches_brute_force_with_ties(k, exclude_self):
    # Half-integers: not the int8 path, yet every distance is exact, so ties are exact.
    q = integer_points(300, 640, seed=20) + 0.5
    r = torch.cat([q, q[:100], integer_points(200, 640, seed=21) + 0.5])  # duplicates tie at 0
    assert ReferenceSet(r).uses_faiss(k, len(q))
    d, i = knn(q, r, k, exclude_self=exclude_self)
    ref_d, ref_i = brute_force(q, r, k, exclude_self=exclude_self)
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(d.double(), ref_d)


@pytest.mark.parametrize("dim", [1, 2, 3, 40])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_integer_data_matches_brute_force(dim, scale, small_budget):
    # Integer data once had an int8 path whose kernel read garbage for 1-D inputs.
    q = integer_points(50, dim, seed=10) * scale
    r = torch.cat([q, integer_points(40, dim, seed=11) * scale])
    k = min(30, len(r) - 1)
    d, i = knn(q, r, k, exclude_self=True)
    ref_d, ref_i = brute_force(q, r, k, exclude_self=True)
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(d.double(), ref_d)


@pytest.mark.parametrize("k", [1, 9, 79])
def test_cosine_matches_brute_force(k, small_budget):
    g = torch.Generator().manual_seed(2)
    q, r = torch.randn(40, 6, generator=g), torch.randn(80, 6, generator=g)
    sims, i = knn(q, r, k, metric="cosine")
    ref_sims, ref_i = brute_force(q, r, k, metric="cosine")
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(sims.double(), ref_sims, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 7, 39])
def test_inner_product_orders_ties_by_index(k, small_budget):
    # FAISS's IndexFlatIP orders exact ties its own way (its min-heap prefers the larger id);
    # the engine keeps its one rule for every metric: equal values by ascending index.
    q = integer_points(30, 5, seed=4)
    r = torch.cat([q, integer_points(10, 5, seed=5)])
    sims, i = knn(q, r, k, metric="ip")
    ref_sims, ref_i = brute_force(q, r, k, metric="ip")
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(sims.double(), ref_sims)


def test_default_excludes_self_and_matches_faiss_order():
    x = integer_points(200, 4, seed=3)
    d, i = knn(x, k=12)  # reference=None: x against itself, self excluded
    index = faiss.IndexFlatL2(4)
    index.add(x.numpy())
    fd, fi = index.search(x.numpy(), 13)
    fi = torch.from_numpy(fi)
    keep = fi != torch.arange(200)[:, None]
    # FAISS lists the self match (distance 0) among equals by index; drop it per row.
    expected = torch.stack([row[m][:12] for row, m in zip(fi, keep)])
    assert torch.equal(i, expected)
    assert torch.equal(d, torch.from_numpy(fd)[keep].view(200, 12)[:, :12])


def test_exact_knn_is_a_drop_in_for_faiss_knn():
    x = integer_points(100, 3, seed=4)
    r = torch.cat([x, integer_points(30, 3, seed=5)])
    ours_d, ours_i = ExactKNN()(x, 7, r, True)
    theirs_d, theirs_i = FaissKNN()(x, 7, r, True)
    assert torch.equal(ours_i, theirs_i)
    assert torch.equal(ours_d, theirs_d)


def test_chunking_does_not_change_the_result(small_budget):
    g = torch.Generator().manual_seed(6)
    q, r = torch.randn(300, 16, generator=g), torch.randn(500, 16, generator=g)
    chunked = knn(q, r, 25)
    chunking.set_memory_budget(2**30)
    whole = knn(q, r, 25)
    # BLAS may round a product differently for another block shape: last bits only.
    assert torch.equal(chunked[1], whole[1])
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=1e-6)


def test_numpy_and_other_dtypes():
    g = torch.Generator().manual_seed(7)
    q, r = torch.randn(30, 5, generator=g), torch.randn(40, 5, generator=g)
    expected = knn(q, r, 3)[1]
    assert torch.equal(knn(q.numpy(), r.numpy(), 3)[1], expected)
    assert torch.equal(knn(q.double(), r.double(), 3)[1], expected)
    assert knn(q.bfloat16(), r.bfloat16(), 3)[1].shape == (30, 3)


def test_nearest_ambiguous_cut_is_resolved_by_index():
    # Row 0: values 0, 1, 1, 1, 2 -> k=2 must take the 1 at the smallest column.
    block = torch.tensor([[1.0, 2.0, 1.0, 0.0, 1.0], [3.0, 1.0, 1.0, 1.0, 0.0]])
    found = nearest(block.clone(), 2, nonnegative=True, want_values=True)
    assert found.columns.tolist() == [[3, 0], [4, 1]]
    assert found.values.tolist() == [[0.0, 1.0], [0.0, 1.0]]


def brute_force_block(block, k, self_columns=None):
    """(value, column)-ordered columns of the k smallest entries of each row."""
    block = block.double().clone()
    if self_columns is not None:
        block[torch.arange(len(block)), self_columns] = float("inf")
    return torch.sort(block, dim=1, stable=True).indices[:, :k]


# k = 4 / 40: full sort and topk; 300 / 700: the threshold path (k >= 256) on 3,000 columns.
@pytest.mark.parametrize("k", [40, 300, 700, 2998])
@pytest.mark.parametrize("quantised", [False, True])
def test_nearest_every_path_orders_by_value_then_column(k, quantised):
    g = torch.Generator().manual_seed(k)
    block = torch.rand(37, 3000, generator=g)
    if quantised:  # heavy exact ties, also across the k-th value
        block = (block * 20).floor()
    self_columns = torch.randint(0, 3000, (37,), generator=g)
    expected = brute_force_block(block, k, self_columns)
    found = nearest(block.clone(), k, self_columns, nonnegative=True, want_values=True)
    assert torch.equal(found.columns, expected)
    assert torch.equal(found.values, block.gather(1, expected))


@pytest.mark.parametrize("values", ["continuous", "quantised", "signed_zeros"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_group_ranks_are_where_the_full_ranking_puts_each_group(values, exclude_self):
    g = torch.Generator().manual_seed(7)
    rows, n, n_groups = 40, 500, 6
    block = torch.rand(rows, n, generator=g)
    if values == "quantised":  # exact ties inside and across groups
        block = (block * 12).floor()
    elif values == "signed_zeros":  # -0.0 equals +0.0: a tie, ordered by column
        block = (block * 3).floor() - 1
        block[block == 0] = -0.0
    codes = torch.randint(0, n_groups, (n,), generator=g)
    codes[codes == 5] = 4  # group 5 has no columns
    row_groups = torch.randint(-1, n_groups, (rows,), generator=g)
    self_columns = torch.randperm(n, generator=g)[:rows] if exclude_self else None
    found = group_ranks(
        block.clone(), ColumnGroups.from_codes(codes, n_groups), row_groups, self_columns
    )
    # Reference: the exact (value, column) order of the whole row, read at the group's columns.
    order = brute_force_block(block, n - int(exclude_self), self_columns)
    for i in range(rows):
        if row_groups[i] < 0:
            expected = torch.tensor([], dtype=torch.int64)
        else:
            expected = torch.nonzero(codes[order[i]] == row_groups[i]).squeeze(1) + 1
        assert torch.equal(found.ranks[i, : found.counts[i]], expected), i


def test_threshold_rows_that_fall_short_are_redone(monkeypatch):
    # Without a margin the cut falls below the k-th value in about half the rows: redone.
    monkeypatch.setattr(knn_module, "_THRESHOLD_SIGMAS", 0.0)
    redone = []
    topk_keys = knn_module._keys_by_topk
    monkeypatch.setattr(
        knn_module,
        "_keys_by_topk",
        lambda block, *a: redone.append(len(block)) or topk_keys(block, *a),
    )
    g = torch.Generator().manual_seed(1)
    block = torch.rand(20, 20_000, generator=g)  # more columns than the sample
    found = nearest(block.clone(), 2000)
    assert redone and 0 < redone[0] < 20
    expected = brute_force_block(block, 2000)
    assert torch.equal(found.columns, expected)


def test_threshold_sample_is_not_fooled_by_periodic_columns():
    # Columns cycle through 10 groups and only every 10th column is near: a strided sample
    # would see only near (or only far) columns; the random one finds the right cut.
    block = torch.full((5, 20_000), 5.0)
    block[:, ::10] = torch.rand(5, 2000, generator=torch.Generator().manual_seed(2))
    found = nearest(block.clone(), 1500)
    assert torch.equal(found.columns, brute_force_block(block, 1500))


def test_numpy_row_keys_equal_sortable_keys():
    values = torch.tensor([0.5, -0.0, 0.0, -1.5, 2.0, -1.5, float("inf"), 1e-30, -1e-30, -3e38])
    cols = torch.arange(len(values)) * 7
    for nonnegative in (False, True):
        v = values.abs() if nonnegative else values
        ours = knn_module._sortable_keys_np(v.numpy(), cols.numpy(), nonnegative)
        assert torch.equal(torch.from_numpy(ours), sortable_keys(v, cols, nonnegative))


def test_sortable_keys_order_like_value_then_column():
    values = torch.tensor([0.5, -0.0, 0.0, -1.5, 2.0, -1.5, float("inf"), 1e-30, -1e-30])
    cols = torch.arange(len(values))
    order = torch.argsort(sortable_keys(values, cols))
    expected = np.lexsort((cols.numpy(), values.numpy()))  # -0.0 == 0.0: tie by column
    assert order.tolist() == expected.tolist()


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: knn(x, k=10), ValueError, "k must be <= 9"),
        (lambda x: knn(x, x, k=11, exclude_self=False), ValueError, "k must be <= 10"),
        (lambda x: knn(x, k=0), ValueError, "k must be >= 1"),
        (lambda x: knn(x, torch.randn(10, 4)), ValueError, "dimension"),
        (lambda x: knn(x, x[:5], exclude_self=True), ValueError, "exclude_self"),
        (lambda x: knn(x, metric="dot"), ValueError, "metric"),
        (lambda x: knn(x.tolist()), TypeError, "query"),
        (lambda x: ExactKNN(metric="dot"), ValueError, "metric"),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(10, 3))


@pytest.fixture
def products(monkeypatch):
    """The query x reference products the search multiplies, mirrored in chunks of 64+."""
    monkeypatch.setattr(knn_module, "_MIN_MIRRORED_ROWS", 64)
    sizes = []
    original = knn_module.ReferenceSet.distances

    def counted(self, queries, out=None, columns=slice(None)):
        sizes.append(queries.shape[0] * self.vectors[columns].shape[0])
        return original(self, queries, out, columns)

    monkeypatch.setattr(knn_module.ReferenceSet, "distances", counted)
    return sizes


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("k", [7, 699])
def test_a_set_searching_itself_multiplies_each_pair_of_chunks_once(products, metric, k):
    # Integer coordinates make every distance exact, so the mirrored blocks must give the
    # same neighbours, ties and values as the unmirrored search of a copy of the set.
    x = torch.randint(-3, 4, (700, 3)).float()
    mirrored = knn(x, k=k, metric=metric)
    assert sum(products) < 0.6 * 700 * 700
    products.clear()
    plain = knn(x, x.clone(), k=k, metric=metric, exclude_self=True)
    assert sum(products) == 700 * 700
    torch.testing.assert_close(mirrored[0], plain[0], rtol=0, atol=1e-6)
    assert torch.equal(mirrored[1], plain[1])


def test_cosine_self_search_is_not_mirrored(products):
    # Its (i, j) and (j, i) round apart: mirroring would break ties between equal similarities.
    knn(torch.randint(-3, 4, (300, 3)).float(), k=5, metric="cosine")
    assert sum(products) == 300 * 300


def test_full_rankings_of_a_set_against_itself_are_unchanged_by_mirroring(products):
    x = torch.randint(0, 3, (600, 2)).float()  # many ties across classes
    labels = torch.randint(0, 4, (600,))
    calc = AccuracyCalculator(k=None, include=("mean_average_precision", "r_precision"))
    alone = calc.get_accuracy(x, labels)
    assert sum(products) < 0.6 * 600 * 600
    assert alone == calc.get_accuracy(x, labels, x.clone(), labels, ref_includes_query=True)
