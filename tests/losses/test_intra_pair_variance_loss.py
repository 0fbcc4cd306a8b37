"""IntraPairVarianceLoss: parity with PML in values and gradients, errors and edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses.intra_pair_variance_loss import GroupVariancePenalty, IntraPairVarianceLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.mark.parametrize("n, d", [(2, 4), (3, 4), (9, 32), (40, 8), (128, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(
        IntraPairVarianceLoss(), pml_losses.IntraPairVarianceLoss(), x, make_labels(n, layout)
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "kwargs", [{}, dict(pos_eps=0.1, neg_eps=0.2), dict(pos_eps=-0.05, neg_eps=0.0)]
)
def test_parity_float32_and_arguments(layout, kwargs):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(
        IntraPairVarianceLoss(**kwargs),
        pml_losses.IntraPairVarianceLoss(**kwargs),
        x,
        make_labels(64, layout),
    )


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        IntraPairVarianceLoss(),
        pml_losses.IntraPairVarianceLoss(),
        x,
        make_labels(48, layout),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [1, 5, 40])
def test_ref_emb(n_ref):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(
        IntraPairVarianceLoss(),
        pml_losses.IntraPairVarianceLoss(),
        x,
        labels,
        ref_emb=ref,
        ref_labels=ref_labels,
    )


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 5)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    loss_parity(IntraPairVarianceLoss(), pml_losses.IntraPairVarianceLoss(), x, labels, tuples)


def test_indices_tuple_bfloat16_and_without_labels():
    x = random_embeddings(40, 16, torch.bfloat16, seed=9)
    labels = random_labels(40, 5)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x.float(), labels)
    for lab in [labels, None]:
        loss_parity(
            IntraPairVarianceLoss(),
            pml_losses.IntraPairVarianceLoss(),
            x,
            lab,
            tuples,
            reference_dtype=torch.float32,
        )


def test_matches_the_formula():
    x = random_embeddings(10, 6, torch.float64, seed=5)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    s = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).T
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    off = ~torch.eye(10, dtype=torch.bool)
    pos, neg = s[same & off], s[~same]
    pos_loss = torch.relu(0.9 * pos.mean() - pos).pow(2).mean()
    neg_loss = torch.relu(neg - 1.2 * neg.mean()).pow(2).mean()
    got = IntraPairVarianceLoss(pos_eps=0.1, neg_eps=0.2)(x, labels)
    torch.testing.assert_close(got, pos_loss + neg_loss)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (distances.LpDistance(), pml_distances.LpDistance()),
        (distances.DotProductSimilarity(), pml_distances.DotProductSimilarity()),
    ],
)
def test_distances(ours, theirs):
    x = random_embeddings(30, 8, torch.float64, seed=10)
    labels = make_labels(30, "three")
    loss_parity(
        IntraPairVarianceLoss(distance=ours),
        pml_losses.IntraPairVarianceLoss(distance=theirs),
        x,
        labels,
    )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SumReducer", {}),
        ("AvgNonZeroReducer", {}),
        ("ThresholdReducer", dict(low=1e-4)),
        ("ClassWeightedReducer", dict(weights=torch.linspace(0.5, 2.0, 6, dtype=torch.float64))),
    ],
)
def test_reducers(name, kwargs):
    # ClassWeightedReducer cannot be fused: it takes the per-pair path.
    x = random_embeddings(33, 8, torch.float64, seed=11)
    labels = random_labels(33, 6)
    loss_parity(
        IntraPairVarianceLoss(reducer=getattr(reducers, name)(**kwargs)),
        pml_losses.IntraPairVarianceLoss(reducer=getattr(pml_reducers, name)(**kwargs)),
        x,
        labels,
    )


def test_multiple_reducers_and_do_nothing():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 4)
    loss_parity(
        IntraPairVarianceLoss(
            reducer=reducers.MultipleReducers({"pos_loss": reducers.SumReducer()})
        ),
        pml_losses.IntraPairVarianceLoss(
            reducer=pml_reducers.MultipleReducers({"pos_loss": pml_reducers.SumReducer()})
        ),
        x,
        labels,
    )
    ours = IntraPairVarianceLoss(reducer=reducers.DoNothingReducer())(x, labels)
    theirs = pml_losses.IntraPairVarianceLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)
    for name in ["pos_loss", "neg_loss"]:
        assert ours[name]["reduction_type"] == theirs[name]["reduction_type"]
        torch.testing.assert_close(ours[name]["losses"], theirs[name]["losses"])


def test_embedding_regularizer_is_added():
    x = random_embeddings(24, 8, torch.float64, seed=13)
    loss_parity(
        IntraPairVarianceLoss(embedding_regularizer=regularizers.LpRegularizer()),
        pml_losses.IntraPairVarianceLoss(embedding_regularizer=pml_regularizers.LpRegularizer()),
        x,
        random_labels(24, 4),
    )


@pytest.mark.parametrize("layout", ["singletons", "one_class"])
def test_missing_pair_kind_gives_zero_term_that_backpropagates(layout):
    x = random_embeddings(16, 8, requires_grad=True)
    loss = IntraPairVarianceLoss()(x, make_labels(16, layout))
    expected = pml_losses.IntraPairVarianceLoss()(x.detach(), make_labels(16, layout))
    torch.testing.assert_close(loss.detach(), expected)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[1, 2] = float("inf")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(IntraPairVarianceLoss()(x, make_labels(8, "three")))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(pos_eps="0.1"), TypeError),
        (dict(neg_eps=float("nan")), ValueError),
        (dict(distance="cosine"), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        IntraPairVarianceLoss(**kwargs)


def test_bad_inputs():
    loss_fn = IntraPairVarianceLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    loss_fn(x, torch.zeros(8))  # float labels: compared by value, as in PML


@pytest.mark.parametrize("increase", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("nonzero_only", [False, True])
def test_group_variance_penalty_value_count_and_gradcheck(increase, masked, nonzero_only):
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(6, 7, generator=g, dtype=torch.float64).requires_grad_(True)
    group = torch.rand(6, 7, generator=g) > 0.4 if masked else None
    scale = 0.99 if increase else 1.01
    total, count = GroupVariancePenalty.apply(sims, group, scale, increase, nonzero_only)
    kept = sims[group] if masked else sims.flatten()
    deviation = kept - scale * kept.mean()
    terms = torch.relu(-deviation if increase else deviation) ** 2
    torch.testing.assert_close(total, terms.sum())
    assert int(count) == (int((terms > 0).sum()) if nonzero_only else len(kept))
    torch.autograd.gradcheck(
        lambda s: GroupVariancePenalty.apply(s, group, scale, increase, nonzero_only)[0], (sims,)
    )


def test_group_variance_penalty_of_an_empty_group_is_zero_with_zero_gradient():
    sims = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    group = torch.zeros(3, 3, dtype=torch.bool)
    total, count = GroupVariancePenalty.apply(sims, group, 1.01, False, False)
    total.backward()
    assert total.item() == 0 and int(count) == 0
    assert torch.equal(sims.grad, torch.zeros(3, 3, dtype=torch.float64))
