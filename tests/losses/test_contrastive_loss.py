"""ContrastiveLoss: parity with PML (values and gradients), reducers, errors, edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses import contrastive_loss as cl_module
from metricssl.losses.contrastive_loss import ContrastiveLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

REDUCERS = {
    "avg_non_zero": ("AvgNonZeroReducer", {}),
    "mean": ("MeanReducer", {}),
    "sum": ("SumReducer", {}),
    "threshold": ("ThresholdReducer", {"low": 0.05, "high": 0.6}),
}
# Margins that make both sub-losses non-trivial for each kind of distance.
MARGINS = {
    "LpDistance": dict(pos_margin=0.2, neg_margin=1.2),
    "CosineSimilarity": dict(pos_margin=0.8, neg_margin=0.1),
}


def pair(reducer=None, distance="LpDistance", **kwargs):
    kwargs = {**MARGINS[distance], **kwargs}
    ours_kw = dict(kwargs, distance=getattr(distances, distance)())
    pml_kw = dict(kwargs, distance=getattr(pml_distances, distance)())
    if reducer is not None:
        name, args = REDUCERS[reducer]
        ours_kw["reducer"] = getattr(reducers, name)(**args)
        pml_kw["reducer"] = getattr(pml_reducers, name)(**args)
    return ContrastiveLoss(**ours_kw), pml_losses.ContrastiveLoss(**pml_kw)


@pytest.mark.parametrize("n,d", [(2, 4), (3, 4), (8, 32), (33, 4), (128, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_float64(n, d, layout, distance):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(*pair(distance=distance), x, make_labels(n, layout))


def test_parity_pml_defaults():
    x = random_embeddings(40, 8, torch.float64, seed=1)
    loss_parity(ContrastiveLoss(), pml_losses.ContrastiveLoss(), x, make_labels(40, "three"))


@pytest.mark.parametrize("reducer", list(REDUCERS))
@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_reducers(reducer, layout, distance):
    x = random_embeddings(33, 8, torch.float64, seed=2)
    loss_parity(*pair(reducer, distance), x, make_labels(33, layout))


def test_parity_do_nothing_reducer():
    x = random_embeddings(12, 4, torch.float64, seed=3)
    labels = make_labels(12, "three")
    ours = ContrastiveLoss(reducer=reducers.DoNothingReducer())(x, labels)
    theirs = pml_losses.ContrastiveLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)
    for name in ["pos_loss", "neg_loss"]:
        assert ours[name]["reduction_type"] == theirs[name]["reduction_type"]
        for a, b in zip(ours[name]["indices"], theirs[name]["indices"]):
            assert torch.equal(a, b)
        torch.testing.assert_close(ours[name]["losses"], theirs[name]["losses"])


def test_parity_multiple_reducers():
    x = random_embeddings(30, 8, torch.float64, seed=4)
    ours = ContrastiveLoss(
        reducer=reducers.MultipleReducers(
            {"pos_loss": reducers.MeanReducer()}, default_reducer=reducers.SumReducer()
        )
    )
    theirs = pml_losses.ContrastiveLoss(
        reducer=pml_reducers.MultipleReducers(
            {"pos_loss": pml_reducers.MeanReducer()}, default_reducer=pml_reducers.SumReducer()
        )
    )
    loss_parity(ours, theirs, x, make_labels(30, "three"))


@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize("reducer", ["avg_non_zero", "mean"])
def test_parity_float32(layout, reducer):
    x = random_embeddings(64, 16, torch.float32, seed=5)
    v, _ = loss_parity(*pair(reducer), x, make_labels(64, layout))
    assert v.dtype == torch.float32


@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_bfloat16_against_float32(distance):
    x = random_embeddings(48, 16, torch.bfloat16, seed=6)
    labels = make_labels(48, "three")
    v, _ = loss_parity(*pair(distance=distance), x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [1, 20, 70])
@pytest.mark.parametrize("reducer", ["avg_non_zero", "threshold"])
def test_parity_ref_emb(n_ref, reducer):
    x = random_embeddings(30, 8, torch.float64, seed=7)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=8)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(*pair(reducer), x, labels, ref_emb=ref, ref_labels=ref_labels)


def test_parity_ref_emb_is_embeddings():
    # Passing the batch itself as ref_emb/ref_labels is PML's self-reference (no diagonal).
    x = random_embeddings(20, 8, torch.float64, seed=9)
    labels = make_labels(20, "three")
    ours, theirs = pair()
    v1 = ours(x, labels, None, x, labels)
    v2 = theirs(x, labels, None, x, labels)
    torch.testing.assert_close(v1, v2)


@pytest.mark.parametrize("miner", ["triplet", "multi_similarity"])
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_indices_tuple_from_pml_miner(miner, distance):
    x = random_embeddings(40, 8, torch.float64, seed=10)
    labels = make_labels(40, "three")
    m = (
        pml_miners.TripletMarginMiner(margin=0.2)
        if miner == "triplet"
        else pml_miners.MultiSimilarityMiner(epsilon=0.1)
    )
    indices = m(x, labels)
    loss_parity(*pair(distance=distance), x, labels, indices_tuple=indices)
    loss_parity(*pair(distance=distance), x, None, indices_tuple=indices)


def test_parity_embedding_regularizer():
    x = random_embeddings(24, 8, torch.float64, seed=11) * 2
    labels = make_labels(24, "three")
    ours = ContrastiveLoss(embedding_regularizer=regularizers.LpRegularizer())
    theirs = pml_losses.ContrastiveLoss(embedding_regularizer=pml_regularizers.LpRegularizer())
    loss_parity(ours, theirs, x, labels)


def test_fast_path_lists_no_pairs(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the fast path must not list pairs")

    monkeypatch.setattr(cl_module.GenericPairLoss, "pair_based_loss", forbidden)
    x = random_embeddings(64, 8, torch.float64, seed=12, requires_grad=True)
    ContrastiveLoss()(x, make_labels(64, "three")).backward()


# -- edge cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[0, 0], [0, 1], [0, 0, 0], [5, 6, 7]])
def test_tiny_batches_match_pml(labels):
    # PML returns zero when there is at most one positive and one negative pair.
    x = random_embeddings(len(labels), 4, torch.float64, seed=13)
    loss_parity(*pair(), x, torch.tensor(labels))


def test_no_pairs_gives_zero_that_backpropagates():
    x = random_embeddings(1, 4, torch.float32, seed=14, requires_grad=True)
    loss = ContrastiveLoss()(x, torch.tensor([3]))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_nan_embeddings_give_nan_loss():
    x = random_embeddings(8, 4, torch.float32, seed=15)
    x[0, 0] = float("inf")
    with pytest.warns(RuntimeWarning):
        loss = ContrastiveLoss()(x, make_labels(8, "three"))
    assert torch.isnan(loss)


def test_records_margins():
    loss_fn = ContrastiveLoss(pos_margin=0.1, neg_margin=0.9)
    assert {"pos_margin", "neg_margin"} <= set(loss_fn._record_these)
    assert loss_fn.sub_loss_names() == ["pos_loss", "neg_loss"]
    assert loss_fn.get_per_pair_loss(torch.tensor([0.5]), "neg").item() == pytest.approx(0.4)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(pos_margin="0"), TypeError),
        (dict(neg_margin=None), TypeError),
        (dict(neg_margin=float("nan")), ValueError),
        (dict(reducer=object()), TypeError),
        (dict(distance="cosine"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        ContrastiveLoss(**kwargs)


def test_bad_inputs():
    loss_fn = ContrastiveLoss()
    x = random_embeddings(8, 4)
    labels = make_labels(8, "three")
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, labels[:3])
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, labels, ref_emb=random_embeddings(5, 4))
    with pytest.raises(TypeError, match="floating"):
        loss_fn(x.long(), labels)
    bad = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([8]))
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(x, labels, indices_tuple=bad)
