"""NTXentLoss: parity with PML in values and gradients, the SimCLR form, errors and edge cases.

PML builds a (positive pairs x negative pairs) matrix, so the PML side of these tests keeps
the pair counts small (few-class layouts only up to N=33, triplet miners on small batches).
"""

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses.ntxent_loss import NTXentLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


def two_views(batch, d, dtype=torch.float64, seed=0):
    x = random_embeddings(2 * batch, d, dtype, seed=seed)
    ids = torch.arange(batch)
    return x, torch.cat([ids, ids])


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    if layout == "three" and n > 33:
        pytest.skip("PML's pair-by-pair matrix is too large for a unit test here")
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(NTXentLoss(), pml_losses.NTXentLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_parity_float32_and_temperatures(layout, temperature):
    x = random_embeddings(32, 16, torch.float32, seed=3)
    loss_parity(
        NTXentLoss(temperature=temperature),
        pml_losses.NTXentLoss(temperature=temperature),
        x,
        make_labels(32, layout),
    )


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(32, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        NTXentLoss(temperature=0.2),
        pml_losses.NTXentLoss(temperature=0.2),
        x,
        make_labels(32, layout),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_simclr_form_is_cross_entropy_over_the_similarity_matrix(temperature):
    batch = 24
    x, labels = two_views(batch, 16, seed=5)
    x.requires_grad_(True)
    loss = NTXentLoss(temperature=temperature)(x, labels)
    z = F.normalize(x, dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)])
    expected = F.cross_entropy(logits, targets)
    torch.testing.assert_close(loss, expected)
    g1, g2 = torch.autograd.grad(loss, x), torch.autograd.grad(expected, x)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_simclr_form_parity(dtype):
    x, labels = two_views(48, 32, dtype, seed=6)
    loss_parity(NTXentLoss(temperature=0.1), pml_losses.NTXentLoss(temperature=0.1), x, labels)


@pytest.mark.parametrize("n_ref", [1, 5, 40])
def test_ref_emb(n_ref):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(30, 6, 1), random_labels(n_ref, 6, 2)
    loss_parity(
        NTXentLoss(), pml_losses.NTXentLoss(), x, labels, ref_emb=ref, ref_labels=ref_labels
    )


def test_ref_emb_with_one_positive_and_one_negative_pair_is_zero():
    # PML gives a zero loss when there is at most one positive and one negative pair.
    x = random_embeddings(1, 8, torch.float64)
    ref = random_embeddings(2, 8, torch.float64, seed=1)
    v, _ = loss_parity(
        NTXentLoss(),
        pml_losses.NTXentLoss(),
        x,
        torch.tensor([0]),
        ref_emb=ref,
        ref_labels=torch.tensor([0, 1]),
    )
    assert v.item() == 0


@pytest.mark.parametrize(
    "miner, n",
    [
        (pml_miners.MultiSimilarityMiner(epsilon=0.1), 64),
        (pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8), 64),
        (pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"), 20),
        (pml_miners.TripletMarginMiner(margin=0.1, type_of_triplets="semihard"), 24),
        (pml_miners.BatchHardMiner(), 64),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, n, dtype):
    x = random_embeddings(n, 16, dtype, seed=8)
    labels = random_labels(n, 4)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    loss_parity(NTXentLoss(), pml_losses.NTXentLoss(), x, labels, tuples)


def test_indices_tuple_bfloat16():
    x = random_embeddings(40, 16, torch.bfloat16, seed=9)
    labels = random_labels(40, 5)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x.float(), labels)
    loss_parity(
        NTXentLoss(temperature=0.3),
        pml_losses.NTXentLoss(temperature=0.3),
        x,
        labels,
        tuples,
        reference_dtype=torch.float32,
    )


def test_duplicate_negatives_are_counted_like_pml():
    # A negative listed twice for an anchor weighs twice in its denominator (PML's sum over
    # the tuple); an anchor whose positive has no negatives gives a zero loss for that pair.
    x = random_embeddings(6, 8, torch.float64, seed=10)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    a1 = torch.tensor([0, 0, 2, 4])
    p = torch.tensor([1, 1, 3, 5])
    a2 = torch.tensor([0, 0, 0, 2, 2])
    n = torch.tensor([2, 2, 4, 5, 0])
    tuples = (a1, p, a2, n)
    ours, theirs = loss_parity(NTXentLoss(), pml_losses.NTXentLoss(), x, labels, tuples)
    collapsed = (a1, p, torch.tensor([0, 0, 2, 2]), torch.tensor([2, 4, 5, 0]))
    assert not torch.isclose(ours, NTXentLoss()(x, labels, collapsed))
    for reducer, pml_reducer in [
        (reducers.PerAnchorReducer(), pml_reducers.PerAnchorReducer()),
        (reducers.AvgNonZeroReducer(), pml_reducers.AvgNonZeroReducer()),
    ]:
        loss_parity(
            NTXentLoss(reducer=reducer),
            pml_losses.NTXentLoss(reducer=pml_reducer),
            x,
            labels,
            tuples,
        )


def test_anchor_without_negatives_gives_finite_gradients():
    x = random_embeddings(6, 8, torch.float64, seed=11, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    tuples = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([0]), torch.tensor([4]))
    loss = NTXentLoss()(x, labels, tuples)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    loss_parity(NTXentLoss(), pml_losses.NTXentLoss(), x, labels, tuples)


@pytest.mark.parametrize("kind", ["triplets", "pairs"])
def test_indices_tuple_without_labels(kind):
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 4)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.2)(x, labels)
    if kind == "triplets":
        tuples = pml_miners.TripletMarginMiner(margin=0.1)(x, labels)
    loss_parity(NTXentLoss(), pml_losses.NTXentLoss(), x, None, tuples)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (distances.LpDistance(), pml_distances.LpDistance()),
        (distances.LpDistance(power=2), pml_distances.LpDistance(power=2)),
        (distances.DotProductSimilarity(), pml_distances.DotProductSimilarity()),
        (
            distances.LpDistance(normalize_embeddings=False),
            pml_distances.LpDistance(normalize_embeddings=False),
        ),
    ],
)
def test_distances(ours, theirs):
    # For a distance PML uses the negated distance as the similarity.
    x = random_embeddings(30, 8, torch.float64, seed=13)
    labels = make_labels(30, "many")
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    for t in [None, tuples]:
        loss_parity(
            NTXentLoss(temperature=0.5, distance=ours),
            pml_losses.NTXentLoss(temperature=0.5, distance=theirs),
            x,
            labels,
            t,
        )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("SumReducer", {}),
        ("AvgNonZeroReducer", {}),
        ("ThresholdReducer", dict(low=3.0)),
        ("ThresholdReducer", dict(high=4.0)),
        ("PerAnchorReducer", {}),
        ("ClassWeightedReducer", dict(weights=torch.rand(10, dtype=torch.float64))),
    ],
)
def test_reducers(name, kwargs):
    x = random_embeddings(33, 8, torch.float64, seed=14)
    labels = random_labels(33, 10)
    loss_parity(
        NTXentLoss(reducer=getattr(reducers, name)(**kwargs)),
        pml_losses.NTXentLoss(reducer=getattr(pml_reducers, name)(**kwargs)),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_pair_losses():
    x = random_embeddings(20, 8, torch.float64, seed=15)
    labels = random_labels(20, 4)
    ours = NTXentLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.NTXentLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "pos_pair"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    for a, b in zip(ours["indices"], theirs["indices"]):
        assert torch.equal(a, b)


def test_embedding_regularizer_is_added():
    x = random_embeddings(24, 8, torch.float64, seed=16)
    loss_parity(
        NTXentLoss(embedding_regularizer=regularizers.LpRegularizer()),
        pml_losses.NTXentLoss(embedding_regularizer=pml_regularizers.LpRegularizer()),
        x,
        random_labels(24, 4),
    )


@pytest.mark.parametrize("layout", ["singletons", "one_class"])
def test_no_positives_or_no_negatives_gives_zero_that_backpropagates(layout):
    x = random_embeddings(16, 8, requires_grad=True)
    loss = NTXentLoss()(x, make_labels(16, layout))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_empty_indices_tuple_gives_zero_that_backpropagates():
    x = random_embeddings(16, 8, requires_grad=True)
    empty = torch.tensor([], dtype=torch.long)
    loss = NTXentLoss()(x, random_labels(16, 3), (empty, empty, empty, empty))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(NTXentLoss()(x, make_labels(8, "three")))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(temperature=0), ValueError),
        (dict(temperature=-0.1), ValueError),
        (dict(temperature=float("nan")), ValueError),
        (dict(temperature="0.1"), TypeError),
        (dict(temperature=None), TypeError),
        (dict(distance="cosine"), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        NTXentLoss(**kwargs)


def test_bad_inputs():
    loss_fn = NTXentLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    with pytest.raises(ValueError):
        loss_fn(
            x,
            torch.zeros(8, dtype=torch.long),
            (torch.tensor([0]), torch.tensor([9]), torch.tensor([1])),
        )
    with pytest.raises(ValueError):
        loss_fn(x[0], torch.zeros(8, dtype=torch.long))


def test_large_batch_with_few_classes():
    # N=1024 with 8 classes has ~130k positive pairs (PML's (pos x N) matrix alone would be
    # 0.5 GB); the fused path works on the N x N matrix only. Checks it runs and is finite.
    x = random_embeddings(1024, 16, requires_grad=True, seed=17)
    loss = NTXentLoss()(x, random_labels(1024, 8))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
