"""NCALoss: parity with PML in values and gradients, chunking, errors and edge cases."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.core import chunking
from metricssl.losses.nca_loss import NCALoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.fixture
def small_budget():
    old = chunking.get_memory_budget()
    chunking.set_memory_budget(2048)  # a handful of rows per block
    yield
    chunking.set_memory_budget(old)


@pytest.mark.parametrize("n", [2, 9, 40])
@pytest.mark.parametrize("d", [3, 16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x, labels = random_embeddings(n, d, torch.float64, seed=n + d), make_labels(n, layout)
    if len(torch.unique(labels)) == n:
        # No query has a positive: PML averages an empty tensor (NaN); here it is 0.
        assert torch.isnan(pml_losses.NCALoss()(x, labels))
        x.requires_grad_()
        loss = NCALoss()(x, labels)
        assert loss.item() == 0
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        return
    loss_parity(NCALoss(), pml_losses.NCALoss(), x, labels)


@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize("softmax_scale", [0.5, 1, 8])
def test_parity_float32_and_scales(layout, softmax_scale):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(
        NCALoss(softmax_scale=softmax_scale),
        pml_losses.NCALoss(softmax_scale=softmax_scale),
        x,
        make_labels(64, layout),
    )


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        NCALoss(), pml_losses.NCALoss(), x, make_labels(48, layout), reference_dtype=torch.float32
    )
    assert v.dtype == torch.bfloat16


def test_matches_the_paper_formula():
    # Goldberger et al.: p_ij = softmax_j(-||x_i - x_j||^2) over j != i; the loss of i is
    # -log(sum of p_ij over same-class j), averaged over the i that have one.
    x = random_embeddings(12, 5, torch.float64, seed=5)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    z = torch.nn.functional.normalize(x, dim=1)
    logits = (-(torch.cdist(z, z) ** 2)).fill_diagonal_(float("-inf"))
    p = torch.softmax(logits, dim=1)
    same = (labels[:, None] == labels[None]) & ~torch.eye(12, dtype=torch.bool)
    keep = same.any(dim=1)
    expected = -torch.log((p * same).sum(dim=1))[keep].mean()
    torch.testing.assert_close(NCALoss()(x, labels), expected)


@pytest.mark.parametrize("n_ref", [1, 5, 40])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ref_emb(n_ref, dtype):
    x = random_embeddings(30, 8, dtype, seed=6)
    ref = random_embeddings(n_ref, 8, dtype, seed=7)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(NCALoss(), pml_losses.NCALoss(), x, labels, ref_emb=ref, ref_labels=ref_labels)


def test_ref_emb_is_a_copy_of_the_batch():
    # A separate reference set is never a self-comparison, even if it holds the same rows.
    x = random_embeddings(20, 8, torch.float64, seed=8)
    labels = random_labels(20, 3)
    loss_parity(
        NCALoss(), pml_losses.NCALoss(), x, labels, ref_emb=x.clone(), ref_labels=labels.clone()
    )


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("with_ref", [False, True])
def test_indices_tuple_from_miner(miner, with_ref):
    x = random_embeddings(40, 16, torch.float64, seed=9)
    labels = random_labels(40, 5)
    ref, ref_labels = (x.flip(0), labels.flip(0)) if with_ref else (None, None)
    tuples = miner(x, labels, ref, ref_labels)
    assert len(tuples[0]) > 0
    loss_parity(NCALoss(), pml_losses.NCALoss(), x, labels, tuples, ref, ref_labels)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (distances.CosineSimilarity(), pml_distances.CosineSimilarity()),
        (distances.LpDistance(), pml_distances.LpDistance()),
        (
            distances.LpDistance(normalize_embeddings=False, power=2),
            pml_distances.LpDistance(normalize_embeddings=False, power=2),
        ),
        (distances.DotProductSimilarity(), pml_distances.DotProductSimilarity()),
    ],
)
def test_distances(ours, theirs):
    x = random_embeddings(30, 8, torch.float64, seed=10)
    loss_parity(
        NCALoss(softmax_scale=2, distance=ours),
        pml_losses.NCALoss(softmax_scale=2, distance=theirs),
        x,
        make_labels(30, "three"),
    )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("MeanReducer", {}),
        ("SumReducer", {}),
        ("AvgNonZeroReducer", {}),
        ("ThresholdReducer", dict(low=0.5)),
        ("PerAnchorReducer", {}),
    ],
)
def test_reducers(name, kwargs):
    x = random_embeddings(33, 8, torch.float64, seed=11)
    labels = random_labels(33, 6)
    loss_parity(
        NCALoss(reducer=getattr(reducers, name)(**kwargs)),
        pml_losses.NCALoss(reducer=getattr(pml_reducers, name)(**kwargs)),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = make_labels(20, "many")
    ours = NCALoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.NCALoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert torch.equal(ours["indices"], theirs["indices"])
    torch.testing.assert_close(ours["losses"], theirs["losses"])


@pytest.mark.parametrize("with_ref", [False, True])
def test_chunked_rows_give_the_same_result(small_budget, with_ref):
    x = random_embeddings(50, 8, torch.float64, seed=13)
    labels = random_labels(50, 4)
    ref, ref_labels = (random_embeddings(70, 8, torch.float64, 14), random_labels(70, 4, 3))
    if not with_ref:
        ref, ref_labels = None, None
    loss_parity(NCALoss(), pml_losses.NCALoss(), x, labels, None, ref, ref_labels)


def test_no_positives_in_the_reference_set_is_a_zero_loss():
    x = random_embeddings(6, 4, torch.float64, seed=15).requires_grad_()
    ref = random_embeddings(4, 4, torch.float64, seed=16)
    loss = NCALoss()(
        x, torch.zeros(6, dtype=torch.long), ref_emb=ref, ref_labels=torch.ones(4, dtype=torch.long)
    )
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_single_embedding_is_a_zero_loss_as_in_pml():
    x = random_embeddings(1, 4, torch.float64, seed=16).requires_grad_()
    ref = random_embeddings(5, 4, torch.float64, seed=17)
    labels, ref_labels = torch.tensor([0]), torch.tensor([0, 0, 1, 1, 2])
    assert NCALoss()(x, labels, ref_emb=ref, ref_labels=ref_labels).item() == 0
    assert pml_losses.NCALoss()(x, labels, ref_emb=ref, ref_labels=ref_labels).item() == 0


def test_no_grad_forward():
    x = random_embeddings(16, 4, torch.float32, seed=18)
    labels = random_labels(16, 3)
    with torch.no_grad():
        v = NCALoss()(x, labels)
    torch.testing.assert_close(v, pml_losses.NCALoss()(x, labels))


def test_nan_embeddings_give_nan():
    x = random_embeddings(8, 4, torch.float32, seed=19)
    x[2, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match="NaN"):
        assert torch.isnan(NCALoss()(x, random_labels(8, 2)))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(softmax_scale=0), ValueError, "softmax_scale"),
        (dict(softmax_scale=-1.0), ValueError, "softmax_scale"),
        (dict(softmax_scale="1"), TypeError, "softmax_scale"),
        (dict(distance="cosine"), TypeError, "distance"),
        (dict(reducer=object()), TypeError, "reducer"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        NCALoss(**kwargs)


def test_bad_inputs():
    x = random_embeddings(8, 4, torch.float32, seed=20)
    labels = random_labels(8, 2)
    with pytest.raises(ValueError, match="labels"):
        NCALoss()(x)
    with pytest.raises(ValueError, match="ref_labels"):
        NCALoss()(x, labels, ref_emb=x.clone())
    with pytest.raises(ValueError, match="embedding size"):
        NCALoss()(x, labels, ref_emb=torch.randn(8, 5), ref_labels=labels)
    with pytest.raises(ValueError, match="labels has length"):
        NCALoss()(x, labels[:5])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_improbable_positives_keep_their_exact_loss(dtype):
    # With a large scale a query's positives can have probability below float32's range:
    # PML drops such a query (its exp underflows to 0); here its loss is the exact
    # -logsumexp of the log-softmax over its positives.
    x = random_embeddings(24, 4, dtype, seed=21)
    labels = random_labels(24, 3)
    scale = 1000.0
    e1 = x.detach().clone().requires_grad_()
    value = NCALoss(softmax_scale=scale)(e1, labels)
    value.backward()
    e2 = x.detach().double().requires_grad_()
    z = torch.nn.functional.normalize(e2, dim=1)
    logits = (-scale * torch.cdist(z, z) ** 2).fill_diagonal_(float("-inf"))
    same = (labels[:, None] == labels[None]) & ~torch.eye(24, dtype=torch.bool)
    log_p = torch.log_softmax(logits, dim=1).masked_fill(~same, float("-inf"))
    per_row = -torch.logsumexp(log_p, dim=1)
    assert per_row.max() > 800  # some rows underflow even in float64
    expected = per_row[same.any(dim=1)].mean()
    expected.backward()
    tol = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(value.double(), expected.detach(), **tol)
    torch.testing.assert_close(e1.grad.double(), e2.grad, **tol)
