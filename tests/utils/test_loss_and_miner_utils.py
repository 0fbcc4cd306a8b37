"""Every public helper of loss_and_miner_utils against PML's lmu, with exact equality."""

import pytest
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as pml_lmu

from metricssl.utils import loss_and_miner_utils as lmu
from tests.parity import random_labels

LAYOUTS = {
    "many_classes": lambda n: random_labels(n, max(2, n // 3), seed=n),
    "one_class": lambda n: torch.zeros(n, dtype=torch.long),
    "singletons": lambda n: torch.arange(n),
    "two_classes": lambda n: torch.arange(n) % 2,
}


def label_pairs(layout, n=10, with_ref=False):
    """(labels, ref_labels) for a layout; ref_labels is None or a separate tensor."""
    labels = LAYOUTS[layout](n)
    return labels, (LAYOUTS[layout](n + 3).flip(0) if with_ref else None)


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a.long(), b.long()), (a, b)
        assert a.dtype == torch.long


# -- logsumexp ---------------------------------------------------------------------------------


@pytest.mark.parametrize("add_one", [True, False])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("with_mask", [False, True])
def test_logsumexp_matches_pml(add_one, dim, with_mask):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 10).requires_grad_(True)
    mask = None
    if with_mask:
        mask = torch.rand(6, 5, generator=g) < 0.5
        mask[2, :] = False  # a row with nothing kept
        mask[:, 3] = False  # and a column
    v1 = lmu.logsumexp(x, keep_mask=mask, add_one=add_one, dim=dim)
    v2 = pml_lmu.logsumexp(x, keep_mask=mask, add_one=add_one, dim=dim)
    torch.testing.assert_close(v1, v2)
    assert v1.shape == v2.shape
    torch.testing.assert_close(
        torch.autograd.grad(v1.sum(), x)[0], torch.autograd.grad(v2.sum(), x)[0]
    )


def test_logsumexp_empty_rows_are_zero_and_large_values_are_stable():
    x = torch.tensor([[1000.0, 1000.0], [5.0, 6.0]])
    mask = torch.tensor([[True, True], [False, False]])
    out = lmu.logsumexp(x, keep_mask=mask, add_one=False)
    torch.testing.assert_close(out, torch.tensor([[1000.0 + torch.log(torch.tensor(2.0))], [0.0]]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(5))
def test_logsumexp_half(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 6, generator=g).to(dtype)
    mask = torch.rand(4, 6, generator=g) < 0.5
    out = lmu.logsumexp(x, keep_mask=mask)
    assert out.dtype == dtype
    # Ours accumulates in float32, PML in the half type: they may differ by a rounding step,
    # and ours is never further from the float64 value.
    ref = pml_lmu.logsumexp(x, keep_mask=mask)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out, ref, rtol=2 * eps, atol=2 * eps)
    exact = lmu.logsumexp(x.double(), keep_mask=mask)
    assert (out.double() - exact).abs().max() <= (ref.double() - exact).abs().max() + 1e-12


# -- pairs -------------------------------------------------------------------------------------


def test_meshgrid_from_sizes():
    x, y = torch.zeros(3, 2), torch.zeros(4, 2)
    assert_same(lmu.meshgrid_from_sizes(x, y), pml_lmu.meshgrid_from_sizes(x, y))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("ref", ["none", "same_object", "equal_copy", "other"])
def test_matches_and_diffs_and_all_pairs(layout, ref):
    labels, other = label_pairs(layout, with_ref=True)
    ref_labels = {
        "none": None,
        "same_object": labels,
        "equal_copy": labels.clone(),
        "other": other,
    }[ref]
    m1, d1 = lmu.get_matches_and_diffs(labels, ref_labels)
    m2, d2 = pml_lmu.get_matches_and_diffs(labels, ref_labels)
    assert torch.equal(m1, m2) and torch.equal(d1, d2) and m1.dtype == m2.dtype
    assert_same(
        lmu.get_all_pairs_indices(labels, ref_labels),
        pml_lmu.get_all_pairs_indices(labels, ref_labels),
    )


def test_convert_to_pairs():
    labels = random_labels(9, 3)
    assert_same(lmu.convert_to_pairs(None, labels), pml_lmu.convert_to_pairs(None, labels))
    trip = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    assert_same(lmu.convert_to_pairs(trip, labels), pml_lmu.convert_to_pairs(trip, labels))
    pairs = trip + (torch.tensor([6, 7]),)
    assert lmu.convert_to_pairs(pairs, labels) is pairs
    ref = random_labels(5, 3, seed=4)
    assert_same(
        lmu.convert_to_pairs(None, labels, ref), pml_lmu.convert_to_pairs(None, labels, ref)
    )


def test_convert_to_pos_pairs_with_unique_labels():
    labels = random_labels(15, 4, seed=2)
    assert_same(
        lmu.convert_to_pos_pairs_with_unique_labels(None, labels),
        pml_lmu.convert_to_pos_pairs_with_unique_labels(None, labels),
    )
    trip = (torch.tensor([3, 0, 3]), torch.tensor([1, 2, 4]), torch.tensor([5, 6, 7]))
    assert_same(
        lmu.convert_to_pos_pairs_with_unique_labels(trip, labels),
        pml_lmu.convert_to_pos_pairs_with_unique_labels(trip, labels),
    )


def test_pos_and_neg_pairs_from_tuple():
    t = tuple(torch.tensor([i]) for i in range(4))
    assert_same(lmu.pos_pairs_from_tuple(t), pml_lmu.pos_pairs_from_tuple(t))
    assert_same(lmu.neg_pairs_from_tuple(t), pml_lmu.neg_pairs_from_tuple(t))


# -- triplets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("n", [1, 2, 12])
def test_all_triplets_equal_pml_including_order(layout, with_ref, n):
    labels, ref_labels = label_pairs(layout, n=n, with_ref=with_ref)
    ours = lmu.get_all_triplets_indices(labels, ref_labels)
    assert_same(ours, pml_lmu.get_all_triplets_indices(labels, ref_labels))
    # PML switches to a per-anchor loop for big batches; that order is the same
    matches, diffs = pml_lmu.get_matches_and_diffs(labels, ref_labels)
    if matches.any() and diffs.any():
        loop = pml_lmu.get_all_triplets_indices_loop_method(labels, matches, diffs)
        assert_same(ours, loop)


def test_triplets_from_masks_is_the_cube_nonzero():
    g = torch.Generator().manual_seed(3)
    pos = torch.rand(7, 9, generator=g) < 0.3
    neg = torch.rand(7, 9, generator=g) < 0.6
    pos[2] = False
    neg[4] = False
    expected = torch.where(pos.unsqueeze(2) & neg.unsqueeze(1))
    assert_same(lmu.triplets_from_masks(pos, neg), expected)
    empty = lmu.triplets_from_masks(pos & False, neg)
    assert all(len(x) == 0 for x in empty)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("t_per_anchor", [None, 1, 4])
@pytest.mark.parametrize("with_ref", [False, True])
def test_random_triplets_equal_pml_with_the_same_seed(layout, t_per_anchor, with_ref):
    labels, ref_labels = label_pairs(layout, n=14, with_ref=with_ref)
    torch.manual_seed(7)
    ours = lmu.get_random_triplet_indices(labels, ref_labels, t_per_anchor=t_per_anchor)
    torch.manual_seed(7)
    theirs = pml_lmu.get_random_triplet_indices(labels, ref_labels, t_per_anchor=t_per_anchor)
    assert_same(ours, theirs)


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_random_triplets_with_weights_equal_pml(with_ref, dtype):
    labels, ref_labels = label_pairs("many_classes", n=14, with_ref=with_ref)
    m = len(labels) if ref_labels is None else len(ref_labels)
    g = torch.Generator().manual_seed(5)
    weights = torch.rand(len(labels), m, generator=g)
    weights[weights < 0.3] = 0
    weights[1] = 0  # an anchor whose negatives all have weight 0 is dropped
    weights = weights.to(dtype)
    torch.manual_seed(11)
    ours = lmu.get_random_triplet_indices(labels, ref_labels, t_per_anchor=3, weights=weights)
    torch.manual_seed(11)
    theirs = pml_lmu.get_random_triplet_indices(labels, ref_labels, t_per_anchor=3, weights=weights)
    assert_same(ours, theirs)
    assert 1 not in ours[0].tolist()


def test_random_triplets_empty():
    out = lmu.get_random_triplet_indices(torch.arange(5))
    assert all(len(x) == 0 and x.dtype == torch.long for x in out)


def test_repeat_and_matched_size_indices():
    a, b = torch.arange(3), torch.arange(10, 17)
    torch.testing.assert_close(
        lmu.repeat_to_match_size(a, 7, 3), pml_lmu.repeat_to_match_size(a, 7, 3)
    )
    assert_same(lmu.matched_size_indices(a, b), pml_lmu.matched_size_indices(a, b))
    assert_same(lmu.matched_size_indices(b, a), pml_lmu.matched_size_indices(b, a))


@pytest.mark.parametrize("with_ref", [False, True])
def test_convert_to_triplets(with_ref):
    labels, ref_labels = label_pairs("many_classes", n=11, with_ref=with_ref)
    assert_same(
        lmu.convert_to_triplets(None, labels, ref_labels, t_per_anchor="all"),
        pml_lmu.convert_to_triplets(None, labels, ref_labels, t_per_anchor="all"),
    )
    for t in [2, 100]:
        torch.manual_seed(3)
        ours = lmu.convert_to_triplets(None, labels, ref_labels, t_per_anchor=t)
        torch.manual_seed(3)
        assert_same(ours, pml_lmu.convert_to_triplets(None, labels, ref_labels, t_per_anchor=t))
    trip = (torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    assert lmu.convert_to_triplets(trip, labels) is trip
    pairs = pml_lmu.get_all_pairs_indices(labels, ref_labels)
    assert_same(lmu.convert_to_triplets(pairs, labels), pml_lmu.convert_to_triplets(pairs, labels))


def test_get_anchors():
    t3 = (torch.tensor([1, 2]), torch.tensor([0, 0]), torch.tensor([3, 3]))
    t4 = t3 + (torch.tensor([5]),)
    t4 = (t4[0], t4[1], torch.tensor([7]), t4[3])
    for t in (t3, t4):
        assert torch.equal(lmu.get_anchors(t), pml_lmu.get_anchors(t))


@pytest.mark.parametrize("using_ref", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_convert_to_weights(using_ref, dtype):
    labels = random_labels(10, 3)
    empty = (torch.tensor([], dtype=torch.long),) * 3
    trip = (torch.tensor([0, 0, 1, 4]), torch.tensor([2, 2, 3, 9]), torch.tensor([5, 6, 6, 6]))
    pairs = (
        torch.tensor([0, 1]),
        torch.tensor([2, 3]),
        torch.tensor([1, 1, 8]),
        torch.tensor([4, 5, 6]),
    )
    for t in (None, empty, trip, pairs):
        w1 = lmu.convert_to_weights(t, labels, dtype=dtype, using_ref=using_ref)
        w2 = pml_lmu.convert_to_weights(t, labels, dtype=dtype, using_ref=using_ref)
        assert w1.dtype == w2.dtype == dtype
        torch.testing.assert_close(w1, w2)


# -- memory-queue self comparisons -------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 5, 17])  # 17: the batch wraps around the queue's end
@pytest.mark.parametrize("ref_is_subset", [False, True])
@pytest.mark.parametrize("size", [3, 4])
def test_remove_self_comparisons(start, ref_is_subset, size):
    batch, queue = 6, 20
    curr_batch_idx = torch.arange(start, start + batch) % queue
    g = torch.Generator().manual_seed(start)
    a = torch.randint(0, batch, (40,), generator=g)
    p = torch.cat([curr_batch_idx[a[:20]], torch.randint(0, queue, (20,), generator=g)])
    n = torch.randint(0, queue, (40,), generator=g)
    if ref_is_subset:  # the queue is the query, the batch the reference
        a, p = p, a
    t = (a, p, n) if size == 3 else (a, p, a.flip(0), n)
    ours = lmu.remove_self_comparisons(t, curr_batch_idx, queue, ref_is_subset)
    theirs = pml_lmu.remove_self_comparisons(t, curr_batch_idx, queue, ref_is_subset)
    assert_same(ours, theirs)
    assert len(ours[0]) < 40  # the first 20 positives include self comparisons
    keep1 = lmu.not_self_comparisons(
        a, p, curr_batch_idx[0], curr_batch_idx[-1], curr_batch_idx, queue, ref_is_subset
    )
    keep2 = pml_lmu.not_self_comparisons(
        a, p.clone(), curr_batch_idx[0], curr_batch_idx[-1], curr_batch_idx, queue, ref_is_subset
    )
    assert torch.equal(keep1, keep2)


def test_remove_self_comparisons_rejects_bad_tuples():
    with pytest.raises(ValueError, match="3 or 4"):
        lmu.remove_self_comparisons((torch.tensor([0]),) * 2, torch.arange(3), 10)


def test_public_names_exist_in_pml_or_are_documented_additions():
    ours = set(lmu.__all__)
    additions = {"triplets_from_masks", "is_self_reference", "masked_logsumexp"}
    for name in ours - additions:
        assert hasattr(pml_lmu, name), name
    for name in ["get_all_triplets_indices", "convert_to_weights", "logsumexp"]:
        assert name in ours


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_ref", [False, True])
def test_all_triplets_method_helpers_equal_pml(layout, with_ref):
    labels, ref_labels = label_pairs(layout, n=12, with_ref=with_ref)
    matches, diffs = pml_lmu.get_matches_and_diffs(labels, ref_labels)
    vectorized = lmu.get_all_triplets_indices_vectorized_method(matches, diffs)
    assert_same(vectorized, pml_lmu.get_all_triplets_indices_vectorized_method(matches, diffs))
    loop = lmu.get_all_triplets_indices_loop_method(labels, matches, diffs)
    assert_same(loop, vectorized)
    if matches.any() and diffs.any():
        assert_same(loop, pml_lmu.get_all_triplets_indices_loop_method(labels, matches, diffs))
