"""TupletMarginLoss: parity with PML in values and gradients, errors and edge cases.

PML builds a (positive pairs x negative pairs) matrix, which for 128 embeddings in 3 classes
takes gigabytes; that layout is checked against PML on a subset of the positive pairs (every
negative pair kept), which exercises the same per-anchor negative sums.
"""

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.tuplet_margin_loss import TupletMarginLoss
from metricssl.utils import loss_and_miner_utils as lmu
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

Ours, Theirs = TupletMarginLoss, pml_losses.TupletMarginLoss


GRID = [
    (n, d, layout)
    for n in [2, 8, 33, 128]
    for d in [4, 32]
    for layout in LAYOUTS
    if not (n == 128 and layout == "three")
]


@pytest.mark.parametrize("n, d, layout", GRID)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(Ours(), Theirs(), x, make_labels(n, layout))


@pytest.mark.parametrize("d", [4, 32])
def test_parity_large_classes_on_subset_of_positive_pairs(d):
    x = random_embeddings(128, d, torch.float64, seed=d)
    labels = make_labels(128, "three")
    a1, p, a2, n = lmu.get_all_pairs_indices(labels)
    keep = torch.randperm(len(a1), generator=torch.Generator().manual_seed(0))[:60]
    loss_parity(Ours(), Theirs(), x, labels, (a1[keep], p[keep], a2, n))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("args", [{}, dict(margin=10.0, scale=16), dict(margin=0, scale=1)])
def test_parity_float32_and_arguments(layout, args):
    x = random_embeddings(40, 16, torch.float32, seed=3)
    loss_parity(Ours(**args), Theirs(**args), x, make_labels(40, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_bfloat16_against_float32(layout):
    # scale=64 magnifies the bfloat16 rounding of the similarities (PML run in bfloat16 is
    # as far from its float32 self), hence the wider gradient tolerance.
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        Ours(), Theirs(), x, make_labels(40, layout), reference_dtype=torch.float32, atol=6e-2
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [5, 40, 70])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ref_emb(n_ref, dtype):
    x = random_embeddings(40, 8, dtype, seed=6)
    ref = random_embeddings(n_ref, 8, dtype, seed=7)
    labels, ref_labels = random_labels(40, 6, 1), random_labels(n_ref, 6, 2)
    loss_parity(Ours(), Theirs(), x, labels, ref_emb=ref, ref_labels=ref_labels)


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
        pml_miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    # Triplets repeat their negative pairs; PML counts every copy, and so do we.
    x = random_embeddings(40, 16, dtype, seed=8)
    labels = random_labels(40, 6)
    loss_parity(Ours(), Theirs(), x, labels, miner(x, labels))


def test_indices_tuple_with_ref_emb():
    x = random_embeddings(30, 8, torch.float64, seed=15)
    ref = random_embeddings(45, 8, torch.float64, seed=16)
    labels, ref_labels = random_labels(30, 4, 3), random_labels(45, 4, 4)
    a1, p, a2, n = lmu.get_all_pairs_indices(labels, ref_labels)
    keep = torch.arange(0, len(a1), 3)
    tuples = (a1[keep], p[keep], a2, n)
    loss_parity(Ours(), Theirs(), x, labels, tuples, ref_emb=ref, ref_labels=ref_labels)


def test_indices_tuple_bfloat16():
    x = random_embeddings(32, 16, torch.bfloat16, seed=9)
    labels = random_labels(32, 5)
    miner = pml_miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard")
    tuples = miner(x.float(), labels)
    loss_parity(Ours(), Theirs(), x, labels, tuples, reference_dtype=torch.float32, atol=6e-2)


@pytest.mark.parametrize("name", ["SumReducer", "AvgNonZeroReducer", "ClassWeightedReducer"])
def test_custom_reducers(name):
    # Sum/AvgNonZero reduce on the fly; ClassWeightedReducer takes PML's per-pair path.
    x = random_embeddings(33, 8, torch.float64, seed=10)
    labels = random_labels(33, 4)
    kw = dict(weights=torch.tensor([0.5, 1.0, 2.0, 3.0])) if name == "ClassWeightedReducer" else {}
    loss_parity(
        Ours(reducer=getattr(reducers, name)(**kw)),
        Theirs(reducer=getattr(pml_reducers, name)(**kw)),
        x,
        labels,
    )


@pytest.mark.parametrize("use_miner", [False, True])
def test_do_nothing_reducer_gives_pml_pairs(use_miner):
    x = random_embeddings(20, 8, torch.float64, seed=11)
    labels = random_labels(20, 3)
    tuples = pml_miners.TripletMarginMiner(margin=0.3)(x, labels) if use_miner else None
    ours = Ours(reducer=reducers.DoNothingReducer())(x, labels, tuples)["loss"]
    theirs = Theirs(reducer=pml_reducers.DoNothingReducer())(x, labels, tuples)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "pos_pair"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    for a, b in zip(ours["indices"], theirs["indices"]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("use_miner", [False, True])
def test_collect_stats(use_miner):
    x = random_embeddings(24, 8, torch.float64, seed=12)
    labels = random_labels(24, 3)
    tuples = pml_miners.TripletMarginMiner(margin=0.3)(x, labels) if use_miner else None
    ours, theirs = Ours(collect_stats=True), Theirs(collect_stats=True)
    ours(x, labels, tuples)
    theirs(x, labels, tuples)
    assert ours.avg_pos_angle == pytest.approx(theirs.avg_pos_angle)
    assert ours.avg_neg_angle == pytest.approx(theirs.avg_neg_angle)
    assert ours.margin == pytest.approx(math.radians(5.73))


@pytest.mark.parametrize(
    "reducer",
    [None, reducers.DoNothingReducer(), reducers.ClassWeightedReducer(torch.ones(12))],
    ids=["fused", "do_nothing", "per_pair"],
)
@pytest.mark.parametrize("labels", [torch.arange(12), torch.zeros(12, dtype=torch.long)])
def test_no_positive_or_no_negative_gives_zero(reducer, labels):
    x = random_embeddings(12, 8, requires_grad=True)
    out = Ours(reducer=reducer)(x, labels)
    theirs = Theirs(reducer=pml_reducers.DoNothingReducer())(x, labels)
    assert theirs["loss"]["losses"] == 0
    if isinstance(reducer, reducers.DoNothingReducer):
        assert out["loss"]["losses"] == 0
        return
    assert out.item() == 0
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_rounded_cosine_above_one_gives_finite_loss():
    # The float32 cosine of these rows with themselves rounds to just above 1: PML's acos
    # gives NaN, the clamped one does not.
    a = [-0.4338788092136383, 0.8487103581428528, 0.6920091509819031]
    b = [-0.2472781538963318, -1.3526537418365479, -1.6959311962127686]
    x = torch.tensor([a, b, b], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    args = (x, labels, None, x.detach().clone(), labels.clone())
    assert torch.isnan(Theirs()(*args))
    loss = Ours()(*args)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_distance_must_be_cosine():
    with pytest.raises(TypeError, match="CosineSimilarity"):
        Ours(distance=distances.LpDistance())
    with pytest.raises(TypeError, match="CosineSimilarity"):
        Ours(distance=distances.DotProductSimilarity())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(margin="5.73"), TypeError),
        (dict(margin=float("nan")), ValueError),
        (dict(scale=0), ValueError),
        (dict(scale=-64), ValueError),
        (dict(scale=None), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Ours(**kwargs)


def test_bad_inputs():
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        Ours()(x)
    with pytest.raises(ValueError, match="ref_labels"):
        Ours()(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    with pytest.raises(ValueError, match="indices_tuple"):
        Ours()(x, None, (torch.tensor([0]), torch.tensor([9]), torch.tensor([0])))


def test_default_path_does_not_list_pairs(monkeypatch):
    from metricssl.core import loss_and_miner_utils

    def fail(*args, **kwargs):
        raise AssertionError("pairs were listed")

    monkeypatch.setattr(loss_and_miner_utils, "convert_to_pairs", fail)
    x = random_embeddings(16, 8, requires_grad=True)
    Ours()(x, random_labels(16, 3)).backward()
