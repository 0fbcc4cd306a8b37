"""ThresholdConsistentMarginLoss: parity with PML in values and gradients, errors, edges."""

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import distances, regularizers
from metricssl.losses.tcm_loss import ThresholdConsistentMarginLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

TCM = ThresholdConsistentMarginLoss
PML_TCM = pml_losses.ThresholdConsistentMarginLoss


@pytest.mark.parametrize("n, d", [(2, 4), (9, 32), (40, 8), (128, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(TCM(), PML_TCM(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        dict(lambda_plus=0.5, lambda_minus=2.0, margin_plus=0.2, margin_minus=-0.1),
        dict(margin_plus=-1.5, margin_minus=1.5),  # no pair is penalised
    ],
)
def test_parity_float32_and_arguments(layout, kwargs):
    x = random_embeddings(64, 4, torch.float32, seed=3)
    loss_parity(TCM(**kwargs), PML_TCM(**kwargs), x, make_labels(64, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 4, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        TCM(margin_plus=0.5, margin_minus=0.0),
        PML_TCM(margin_plus=0.5, margin_minus=0.0),
        x,
        make_labels(48, layout),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


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
    x = random_embeddings(48, 8, dtype, seed=8)
    labels = random_labels(48, 5)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    args = dict(margin_plus=0.6, margin_minus=0.1)
    for lab in [labels, None]:
        loss_parity(TCM(**args), PML_TCM(**args), x, lab, tuples)


def test_ref_emb_uses_the_reference_embeddings():
    # PML reads the second member of each pair from `embeddings`; with a copy of the batch
    # as ref_emb the values agree, and our gradient is split between the two inputs.
    x = random_embeddings(30, 4, torch.float64, seed=6)
    labels = random_labels(30, 3, 1)
    ref, ref_labels = x.clone().requires_grad_(), labels.clone()
    q = x.clone().requires_grad_()
    ours = TCM(margin_plus=0.5, margin_minus=0.0)(q, labels, ref_emb=ref, ref_labels=ref_labels)
    xp = x.clone().requires_grad_()
    theirs = PML_TCM(margin_plus=0.5, margin_minus=0.0)(xp, labels, None, xp, labels.clone())
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(q.grad + ref.grad, xp.grad)


def test_ref_emb_of_another_size_matches_the_formula():
    x, ref = (
        random_embeddings(10, 4, torch.float64, seed=1),
        random_embeddings(17, 4, torch.float64, seed=2),
    )
    labels, ref_labels = random_labels(10, 3, 3), random_labels(17, 3, 4)
    s = F.normalize(x, dim=1) @ F.normalize(ref, dim=1).T
    same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    pos, neg = s[same], s[~same]
    pos_gap, neg_gap = 0.5 - pos[pos <= 0.5], neg[neg >= 0.1] - 0.1
    expected = 2.0 * pos_gap.mean() + 0.5 * neg_gap.mean()
    got = TCM(2.0, 0.5, 0.5, 0.1)(x, labels, ref_emb=ref, ref_labels=ref_labels)
    torch.testing.assert_close(got, expected)


def test_embedding_regularizer_is_added():
    x = random_embeddings(24, 8, torch.float64, seed=13)
    loss_parity(
        TCM(embedding_regularizer=regularizers.LpRegularizer()),
        PML_TCM(embedding_regularizer=pml_regularizers.LpRegularizer()),
        x,
        random_labels(24, 4),
    )


@pytest.mark.parametrize("layout", ["singletons", "one_class"])
def test_missing_pair_kind_backpropagates(layout):
    x = random_embeddings(16, 8, requires_grad=True)
    loss = TCM()(x, make_labels(16, layout))
    torch.testing.assert_close(loss.detach(), PML_TCM()(x.detach(), make_labels(16, layout)))
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_single_sample_gives_zero_that_backpropagates():
    x = random_embeddings(1, 8, requires_grad=True)
    loss = TCM()(x, torch.tensor([0]))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[1, 2] = float("inf")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(TCM()(x, make_labels(8, "three")))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(lambda_plus=-1.0), ValueError),
        (dict(lambda_minus=-0.1), ValueError),
        (dict(margin_plus="0.9"), TypeError),
        (dict(margin_minus=float("nan")), ValueError),
        (dict(distance=distances.LpDistance()), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        TCM(**kwargs)


def test_bad_inputs():
    loss_fn = TCM()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    loss_fn(x, torch.zeros(8))  # float labels: compared by value, as in PML
