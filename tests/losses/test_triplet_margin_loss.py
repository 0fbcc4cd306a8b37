"""TripletMarginLoss: parity with PML (values and gradients), flags, memory budget, errors."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.core import chunking
from metricssl.losses import triplet_margin_loss as tml_module
from metricssl.losses.triplet_margin_loss import TripletMarginLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

REDUCERS = {
    "avg_non_zero": ("AvgNonZeroReducer", {}),
    "mean": ("MeanReducer", {}),
    "sum": ("SumReducer", {}),
    "threshold": ("ThresholdReducer", {"low": 0.02, "high": 0.3}),
    "threshold_high": ("ThresholdReducer", {"high": 0.1}),
    "threshold_negative_low": ("ThresholdReducer", {"low": -1.0}),
}
FLAGS = [dict(swap=True), dict(smooth_loss=True), dict(swap=True, smooth_loss=True)]


def pair(reducer=None, distance=None, **kwargs):
    """Our loss and PML's, built with the same arguments."""
    ours_kw, pml_kw = dict(kwargs), dict(kwargs)
    if reducer is not None:
        name, args = REDUCERS[reducer]
        ours_kw["reducer"] = getattr(reducers, name)(**args)
        pml_kw["reducer"] = getattr(pml_reducers, name)(**args)
    if distance is not None:
        ours_kw["distance"] = getattr(distances, distance)()
        pml_kw["distance"] = getattr(pml_distances, distance)()
    return TripletMarginLoss(**ours_kw), pml_losses.TripletMarginLoss(**pml_kw)


@pytest.fixture
def small_budget():
    before = chunking.get_memory_budget()
    yield chunking.set_memory_budget
    chunking.set_memory_budget(before)


# -- parity: the sorted fast path ---------------------------------------------------------------


@pytest.mark.parametrize("n,d", [(2, 4), (8, 32), (33, 4), (128, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_all_triplets_float64(n, d, layout, distance):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    labels = make_labels(n, layout)
    loss_parity(*pair(margin=0.1, distance=distance), x, labels)


@pytest.mark.parametrize("reducer", list(REDUCERS))
@pytest.mark.parametrize(
    "layout, distance", [("three", "LpDistance"), ("many", "CosineSimilarity")]
)
def test_parity_fused_reducers(reducer, layout, distance):
    x = random_embeddings(33, 8, torch.float64, seed=1)
    loss_parity(*pair(reducer, distance, margin=0.2), x, make_labels(33, layout))


def test_parity_margin_zero_and_large():
    x = random_embeddings(40, 8, torch.float64, seed=2)
    labels = make_labels(40, "three")
    for margin in [0, 0.5, 3.0, -0.1]:
        loss_parity(*pair("mean", margin=margin), x, labels)
        loss_parity(*pair(margin=margin), x, labels)


def test_parity_unnormalized_lp_and_power():
    x = random_embeddings(30, 6, torch.float64, seed=3) * 3
    labels = make_labels(30, "three")
    ours = TripletMarginLoss(margin=0.3, distance=distances.LpDistance(normalize_embeddings=False))
    theirs = pml_losses.TripletMarginLoss(
        margin=0.3, distance=pml_distances.LpDistance(normalize_embeddings=False)
    )
    loss_parity(ours, theirs, x, labels)
    ours = TripletMarginLoss(distance=distances.LpDistance(power=2))
    theirs = pml_losses.TripletMarginLoss(distance=pml_distances.LpDistance(power=2))
    loss_parity(ours, theirs, x, labels)


def test_fast_path_lists_no_triplets(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the all-triplets path must not list triplets")

    monkeypatch.setattr(tml_module.lmu, "convert_to_triplets", forbidden)
    x = random_embeddings(64, 8, torch.float64, seed=4, requires_grad=True)
    TripletMarginLoss()(x, make_labels(64, "three")).backward()
    TripletMarginLoss(swap=True, smooth_loss=True)(x, make_labels(64, "many")).backward()


# -- parity: swap and smooth_loss ---------------------------------------------------------------


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_swap_smooth(flags, layout, distance):
    x = random_embeddings(24, 8, torch.float64, seed=5)
    loss_parity(*pair(distance=distance, margin=0.1, **flags), x, make_labels(24, layout))


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("reducer", ["mean", "sum", "threshold"])
def test_parity_swap_smooth_reducers(flags, reducer):
    x = random_embeddings(24, 8, torch.float64, seed=6)
    loss_parity(*pair(reducer, margin=0.2, **flags), x, make_labels(24, "three"))


# -- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{}] + FLAGS)
@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(flags, layout):
    x = random_embeddings(64, 16, torch.float32, seed=7)
    v, _ = loss_parity(*pair(**flags), x, make_labels(64, layout))
    assert v.dtype == torch.float32


@pytest.mark.parametrize("flags", [{}] + FLAGS)
@pytest.mark.parametrize("reducer", ["avg_non_zero", "mean"])
def test_parity_bfloat16_against_float32(flags, reducer):
    x = random_embeddings(48, 16, torch.bfloat16, seed=8)
    labels = make_labels(48, "three")
    v, _ = loss_parity(*pair(reducer, **flags), x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


def test_float16_runs_and_backpropagates():
    x = random_embeddings(32, 8, torch.float16, seed=9, requires_grad=True)
    loss = TripletMarginLoss()(x, make_labels(32, "three"))
    loss.backward()
    assert loss.dtype == torch.float16 and torch.isfinite(x.grad.float()).all()


# -- ref_emb, miners, random triplets, element-wise reducers -----------------------------------


@pytest.mark.parametrize("n_ref", [1, 20, 70])
@pytest.mark.parametrize("flags", [{}, dict(smooth_loss=True)])
@pytest.mark.parametrize("reducer", ["avg_non_zero", "mean", "threshold"])
def test_parity_ref_emb(n_ref, flags, reducer):
    x = random_embeddings(30, 8, torch.float64, seed=10)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=11)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    ours, theirs = pair(reducer, **flags)
    loss_parity(ours, theirs, x, labels, ref_emb=ref, ref_labels=ref_labels)


def swap_reference(x, labels, ref, ref_labels, margin):
    """The swap with a separate reference set, by brute force: d(p, n) between ref rows."""
    x, ref = torch.nn.functional.normalize(x), torch.nn.functional.normalize(ref)
    d_qr, d_rr = torch.cdist(x, ref), torch.cdist(ref, ref)
    pos = labels[:, None] == ref_labels[None]
    a, p, n = torch.where(pos[:, :, None] & ~pos[:, None, :])
    d_an = torch.minimum(d_qr[a, n], d_rr[p, n])
    losses = torch.relu(d_qr[a, p] - d_an + margin)
    return losses[losses > 0].mean()


@pytest.mark.parametrize("listed", [False, True])
def test_swap_with_ref_emb_uses_reference_distances(listed):
    x = random_embeddings(20, 6, torch.float64, seed=12, requires_grad=True)
    ref = random_embeddings(25, 6, torch.float64, seed=13, requires_grad=True)
    labels, ref_labels = random_labels(20, 3, 3), random_labels(25, 3, 4)
    # listed: the same triplets handed over as an indices_tuple take PML's per-triplet path.
    indices = None
    if listed:
        pos = labels[:, None] == ref_labels[None]
        indices = torch.where(pos[:, :, None] & ~pos[:, None, :])
    ours = TripletMarginLoss(margin=0.2, swap=True)(x, labels, indices, ref, ref_labels)
    expected = swap_reference(x, labels, ref, ref_labels, 0.2)
    g1 = torch.autograd.grad(ours, [x, ref])
    g2 = torch.autograd.grad(expected, [x, ref])
    torch.testing.assert_close(ours, expected)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("miner", ["triplet", "multi_similarity"])
@pytest.mark.parametrize("flags", [{}, dict(swap=True), dict(smooth_loss=True)])
def test_parity_indices_tuple_from_pml_miner(miner, flags):
    x = random_embeddings(40, 8, torch.float64, seed=14)
    labels = make_labels(40, "three")
    m = (
        pml_miners.TripletMarginMiner(margin=0.2)
        if miner == "triplet"
        else pml_miners.MultiSimilarityMiner(epsilon=0.1)
    )
    indices = m(x, labels)
    loss_parity(*pair(**flags), x, labels, indices_tuple=indices)
    # Indices alone (no labels) work as in PML.
    loss_parity(*pair(**flags), x, None, indices_tuple=indices)


def test_parity_empty_indices_tuple():
    x = random_embeddings(10, 4, torch.float64, seed=15)
    empty = torch.tensor([], dtype=torch.long)
    loss_parity(*pair(), x, make_labels(10, "three"), indices_tuple=(empty, empty, empty))


@pytest.mark.parametrize("per_anchor", [1, 5])
@pytest.mark.parametrize("flags", [{}, dict(swap=True)])
@pytest.mark.parametrize("layout", ["three", "many", "singletons"])
def test_parity_random_triplets_seeded(per_anchor, flags, layout):
    x = random_embeddings(30, 8, torch.float64, seed=16)
    ours, theirs = pair(triplets_per_anchor=per_anchor, **flags)
    loss_parity(ours, theirs, x, make_labels(30, layout), seed=123)


@pytest.mark.parametrize("flags", [{}, dict(swap=True, smooth_loss=True)])
def test_do_nothing_reducer_returns_pml_losses(flags):
    x = random_embeddings(16, 4, torch.float64, seed=17)
    labels = make_labels(16, "three")
    ours = TripletMarginLoss(reducer=reducers.DoNothingReducer(), **flags)(x, labels)
    theirs = pml_losses.TripletMarginLoss(reducer=pml_reducers.DoNothingReducer(), **flags)(
        x, labels
    )
    assert ours["loss"]["reduction_type"] == theirs["loss"]["reduction_type"] == "triplet"
    ours_rows = torch.stack(list(ours["loss"]["indices"]) + [ours["loss"]["losses"]], 1)
    pml_rows = torch.stack(list(theirs["loss"]["indices"]) + [theirs["loss"]["losses"]], 1)
    sort = lambda t: t[torch.argsort(t[:, 0] * 10**6 + t[:, 1] * 10**3 + t[:, 2])]  # noqa: E731
    torch.testing.assert_close(sort(ours_rows), sort(pml_rows))


def test_parity_class_weighted_reducer():
    x = random_embeddings(24, 8, torch.float64, seed=18)
    labels = make_labels(24, "three")
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ours = TripletMarginLoss(reducer=reducers.ClassWeightedReducer(w))
    theirs = pml_losses.TripletMarginLoss(reducer=pml_reducers.ClassWeightedReducer(w))
    loss_parity(ours, theirs, x, labels)


def test_parity_embedding_regularizer():
    x = random_embeddings(24, 8, torch.float64, seed=19) * 2
    labels = make_labels(24, "three")
    ours = TripletMarginLoss(
        embedding_regularizer=regularizers.LpRegularizer(), embedding_reg_weight=0.3
    )
    theirs = pml_losses.TripletMarginLoss(
        embedding_regularizer=pml_regularizers.LpRegularizer(), embedding_reg_weight=0.3
    )
    loss_parity(ours, theirs, x, labels)


# -- memory budget -----------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{}, dict(swap=True), dict(smooth_loss=True)])
@pytest.mark.parametrize("reducer", ["avg_non_zero", "mean", "threshold"])
def test_small_memory_budget_gives_same_result(small_budget, flags, reducer):
    x = random_embeddings(30, 8, torch.float64, seed=20)
    labels = make_labels(30, "three")
    # A few rows (sorted path) or a few pairs (swap/smooth path) per chunk.
    small_budget(16000)
    loss_parity(*pair(reducer, **flags), x, labels)


@pytest.mark.parametrize("flags", [{}, dict(swap=True), dict(smooth_loss=True)])
def test_chunks_respect_the_budget(small_budget, monkeypatch, flags):
    budget = 16000
    small_budget(budget)
    seen = []
    real = chunking.row_chunks

    def recording(n_rows, bytes_per_row, budget=None, device=None):
        assert device == x.device
        for s in real(n_rows, bytes_per_row, budget, device):
            seen.append((s.stop - s.start) * bytes_per_row)
            yield s

    monkeypatch.setattr(tml_module.chunking, "row_chunks", recording)
    x = random_embeddings(30, 8, torch.float64, seed=21, requires_grad=True)
    TripletMarginLoss(**flags)(x, make_labels(30, "three")).backward()
    assert len(seen) > 1
    assert all(size <= budget for size in seen)


# -- edge cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{}, dict(swap=True), dict(smooth_loss=True)])
@pytest.mark.parametrize("layout", ["one_class", "singletons"])
def test_no_triplets_gives_zero_that_backpropagates(flags, layout):
    x = random_embeddings(6, 4, torch.float32, seed=22, requires_grad=True)
    loss = TripletMarginLoss(**flags)(x, make_labels(6, layout))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_nan_embeddings_give_nan_loss():
    x = random_embeddings(8, 4, torch.float32, seed=23)
    x[2, 1] = float("nan")
    with pytest.warns(RuntimeWarning):
        loss = TripletMarginLoss()(x, make_labels(8, "three"))
    assert torch.isnan(loss)


def test_labels_on_other_dtype_and_collect_stats():
    x = random_embeddings(16, 4, torch.float64, seed=24)
    labels = make_labels(16, "three").to(torch.int32)
    loss_fn = TripletMarginLoss(margin=0.3, collect_stats=True)
    loss_parity(loss_fn, pml_losses.TripletMarginLoss(margin=0.3), x, labels)
    assert "margin" in loss_fn._record_these


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(margin="0.1"), TypeError),
        (dict(margin=float("nan")), ValueError),
        (dict(swap=1), TypeError),
        (dict(smooth_loss="yes"), TypeError),
        (dict(triplets_per_anchor=0), ValueError),
        (dict(triplets_per_anchor=-3), ValueError),
        (dict(triplets_per_anchor=2.5), TypeError),
        (dict(triplets_per_anchor=True), TypeError),
        (dict(triplets_per_anchor="some"), ValueError),
        (dict(reducer="mean"), TypeError),
        (dict(distance=torch.nn.Identity()), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        TripletMarginLoss(**kwargs)


def test_bad_inputs():
    loss_fn = TripletMarginLoss()
    x = random_embeddings(8, 4)
    labels = make_labels(8, "three")
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, labels[:5])
    loss_fn(x, labels.float())  # float labels: compared by value, as in PML
    with pytest.raises(ValueError, match="2D"):
        loss_fn(x[:, 0], labels)
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, labels, ref_emb=random_embeddings(5, 4))
    with pytest.raises(ValueError, match="embedding size"):
        loss_fn(x, labels, ref_emb=random_embeddings(5, 3), ref_labels=labels[:5])
    bad = (torch.tensor([0]), torch.tensor([9]), torch.tensor([1]))
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(x, labels, indices_tuple=bad)
