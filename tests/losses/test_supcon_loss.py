"""SupConLoss: parity with PML in values and gradients, errors and edge cases."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, reducers, regularizers
from metricssl.losses.supcon_loss import SupConLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(SupConLoss(), pml_losses.SupConLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_parity_float32_and_temperatures(layout, temperature):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(
        SupConLoss(temperature=temperature),
        pml_losses.SupConLoss(temperature=temperature),
        x,
        make_labels(64, layout),
    )


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        SupConLoss(temperature=0.2),
        pml_losses.SupConLoss(temperature=0.2),
        x,
        make_labels(48, layout),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


def test_matches_the_paper_formula():
    # Eq. (2) of Khosla et al.: per anchor, the mean over its positives of the log-softmax
    # over all other samples; the mean over anchors that have positives.
    x = random_embeddings(12, 8, torch.float64, seed=5)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    t = 0.3
    z = F.normalize(x, dim=1)
    logits = (z @ z.T / t).fill_diagonal_(float("-inf"))
    log_prob = torch.log_softmax(logits, dim=1)
    per_anchor = []
    for i in range(12):
        pos = [j for j in range(12) if j != i and labels[j] == labels[i]]
        if pos:
            per_anchor.append(-log_prob[i, pos].mean())
    expected = torch.stack(per_anchor).mean()
    torch.testing.assert_close(SupConLoss(temperature=t)(x, labels), expected)


@pytest.mark.parametrize("n_ref", [1, 5, 40])
def test_ref_emb(n_ref):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(
        SupConLoss(), pml_losses.SupConLoss(), x, labels, ref_emb=ref, ref_labels=ref_labels
    )


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 5)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    loss_parity(SupConLoss(), pml_losses.SupConLoss(), x, labels, tuples)


def test_indices_tuple_bfloat16_and_without_labels():
    x = random_embeddings(40, 16, torch.bfloat16, seed=9)
    labels = random_labels(40, 5)
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x.float(), labels)
    for lab in [labels, None]:
        loss_parity(
            SupConLoss(), pml_losses.SupConLoss(), x, lab, tuples, reference_dtype=torch.float32
        )


def test_pair_both_positive_and_negative_is_an_error():
    x = random_embeddings(4, 4, torch.float64)
    t = (torch.tensor([0]), torch.tensor([1]), torch.tensor([0, 2]), torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="both positive and negative"):
        SupConLoss()(x, None, t)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (distances.LpDistance(), pml_distances.LpDistance()),
        (distances.DotProductSimilarity(), pml_distances.DotProductSimilarity()),
        (distances.LpDistance(power=2), pml_distances.LpDistance(power=2)),
    ],
)
def test_distances(ours, theirs):
    x = random_embeddings(30, 8, torch.float64, seed=10)
    labels = make_labels(30, "three")
    loss_parity(
        SupConLoss(temperature=0.5, distance=ours),
        pml_losses.SupConLoss(temperature=0.5, distance=theirs),
        x,
        labels,
    )


@pytest.mark.parametrize(
    "name, kwargs",
    [("MeanReducer", {}), ("SumReducer", {}), ("ThresholdReducer", dict(low=2.0))],
)
def test_reducers(name, kwargs):
    x = random_embeddings(33, 8, torch.float64, seed=11)
    labels = random_labels(33, 10)
    loss_parity(
        SupConLoss(reducer=getattr(reducers, name)(**kwargs)),
        pml_losses.SupConLoss(reducer=getattr(pml_reducers, name)(**kwargs)),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 6)
    ours = SupConLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.SupConLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "element"
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    assert torch.equal(ours["indices"], theirs["indices"])


def test_embedding_regularizer_is_added():
    x = random_embeddings(24, 8, torch.float64, seed=13)
    loss_parity(
        SupConLoss(embedding_regularizer=regularizers.LpRegularizer()),
        pml_losses.SupConLoss(embedding_regularizer=pml_regularizers.LpRegularizer()),
        x,
        random_labels(24, 4),
    )


@pytest.mark.parametrize("layout", ["singletons", "one_class"])
def test_no_positives_or_no_negatives_gives_zero_that_backpropagates(layout):
    x = random_embeddings(16, 8, requires_grad=True)
    loss = SupConLoss()(x, make_labels(16, layout))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[1, 2] = float("inf")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(SupConLoss()(x, make_labels(8, "three")))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(temperature=0), ValueError),
        (dict(temperature=-1), ValueError),
        (dict(temperature="0.1"), TypeError),
        (dict(distance="cosine"), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        SupConLoss(**kwargs)


def test_bad_inputs():
    loss_fn = SupConLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    loss_fn(x, torch.zeros(8))  # float labels: compared by value, as in PML


# -- multi-label (multi-hot) labels: not in PML ------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.float32, torch.uint8])
def test_one_label_per_row_equals_the_1d_result(layout, dtype):
    x = random_embeddings(24, 8, torch.float64, seed=14)
    labels = make_labels(24, layout)
    one_hot = F.one_hot(labels, int(labels.max()) + 3).to(dtype)  # unused classes too
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    multi, single = SupConLoss()(x1, one_hot), SupConLoss()(x2, labels)
    torch.testing.assert_close(multi, single)
    if single.requires_grad:
        multi.backward()
        single.backward()
        torch.testing.assert_close(x1.grad, x2.grad)


def test_one_label_per_row_with_ref_emb_and_miner():
    x, ref = random_embeddings(20, 8, torch.float64, seed=15), random_embeddings(9, 8, seed=16)
    ref = ref.double()
    labels, ref_labels = random_labels(20, 4, 3), random_labels(9, 4, 4)
    hot, ref_hot = F.one_hot(labels, 4), F.one_hot(ref_labels, 4)
    torch.testing.assert_close(
        SupConLoss()(x, hot, ref_emb=ref, ref_labels=ref_hot),
        SupConLoss()(x, labels, ref_emb=ref, ref_labels=ref_labels),
    )
    tuples = pml_miners.MultiSimilarityMiner(epsilon=0.1)(x, labels)
    torch.testing.assert_close(SupConLoss()(x, hot, tuples), SupConLoss()(x, labels, tuples))


def test_multi_hot_hand_computed():
    # Unit vectors at 0, 90 and 180 degrees: cosines s01 = s12 = 0, s02 = -1. Sample 1 has
    # both classes, so 0~1 and 1~2 are positives and 0, 2 are negatives. With T = 1:
    #   anchor 0: -log(e^0 / (e^0 + e^-1)) = log(1 + e^-1), and the same for anchor 2;
    #   anchor 1: -(1/2) * 2 * log(e^0 / (e^0 + e^0)) = log(2).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(2)) / 3
    assert SupConLoss(temperature=1.0)(x, labels).item() == pytest.approx(expected, rel=1e-12)


def test_multi_hot_matches_the_formula():
    x = random_embeddings(14, 6, torch.float64, seed=17)
    g = torch.Generator().manual_seed(18)
    labels = (torch.rand(14, 5, generator=g) < 0.3).long()
    labels[3] = 0  # a sample with no class: a negative of everyone, no positives itself
    t = 0.2
    z = F.normalize(x, dim=1)
    log_prob = torch.log_softmax((z @ z.T / t).fill_diagonal_(float("-inf")), dim=1)
    shared = (labels @ labels.T) > 0
    per_anchor = []
    for i in range(14):
        pos = [j for j in range(14) if j != i and shared[i, j]]
        if pos:
            per_anchor.append(-log_prob[i, pos].mean())
    expected = torch.stack(per_anchor).mean()
    torch.testing.assert_close(SupConLoss(temperature=t)(x, labels), expected)


def test_multi_hot_gradcheck():
    x = random_embeddings(7, 4, torch.float64, seed=19, requires_grad=True)
    labels = torch.tensor(
        [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 0]]
    )
    assert torch.autograd.gradcheck(lambda e: SupConLoss(temperature=0.5)(e, labels), (x,))


def test_multi_hot_without_positives_gives_zero_that_backpropagates():
    x = random_embeddings(6, 4, requires_grad=True)
    loss = SupConLoss()(x, torch.eye(6, dtype=torch.long))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_multi_hot_bad_inputs():
    loss_fn = SupConLoss()
    x = random_embeddings(6, 4)
    hot = torch.eye(6, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="rows"):
        loss_fn(x, hot[:5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        loss_fn(x, hot * 2)
    with pytest.raises(ValueError, match="only 0 and 1"):
        loss_fn(x, hot.float() * 0.5)
    with pytest.raises(ValueError, match="shape"):
        loss_fn(x, torch.zeros(6, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, hot, ref_emb=random_embeddings(4, 4))
    with pytest.raises(ValueError, match="2D"):
        loss_fn(
            x, hot, ref_emb=random_embeddings(4, 4), ref_labels=torch.zeros(4, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="classes"):
        loss_fn(x, hot, ref_emb=random_embeddings(4, 4), ref_labels=torch.zeros(4, 5))
    with pytest.raises(ValueError, match="rows"):
        loss_fn(x, hot, ref_emb=random_embeddings(4, 4), ref_labels=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="without ref_emb"):
        loss_fn(x, hot, ref_labels=hot)
    with pytest.raises(ValueError, match="1D"):
        loss_fn(x, torch.zeros(6, 3, 2, dtype=torch.long))
    weighted = SupConLoss(reducer=reducers.ClassWeightedReducer(torch.ones(3)))
    with pytest.raises(ValueError, match="ClassWeightedReducer"):
        weighted(x, hot)
