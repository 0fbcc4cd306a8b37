"""MultipleNegativesRankingLoss: the value against the formula, gradients, errors, edges."""

import math

import pytest
import torch
import torch.nn.functional as F

from metricssl import distances, reducers, regularizers
from metricssl.losses.multiple_negatives_ranking_loss import MultipleNegativesRankingLoss
from tests.parity import random_embeddings, random_labels

MNRL = MultipleNegativesRankingLoss


def direct(a, p, scale=20.0, symmetric=False, labels=None, ref_labels=None, cosine=True):
    """The loss written out term by term, one anchor (and one positive) at a time."""
    n, m = a.shape[0], p.shape[0]
    if cosine:
        a, p = F.normalize(a, dim=1), F.normalize(p, dim=1)
    if labels is not None and ref_labels is None:
        ref_labels = [int(labels[j]) if j < n else None for j in range(m)]

    def counted(i, j):  # candidate j for anchor i (or anchor j for positive i)
        return labels is None or j == i or ref_labels[j] != int(labels[i])

    forward = []
    for i in range(n):
        terms = [math.exp(scale * float(a[i] @ p[j])) for j in range(m) if counted(i, j)]
        forward.append(-(scale * float(a[i] @ p[i]) - math.log(sum(terms))))
    if not symmetric:
        return sum(forward) / n
    backward = []
    for j in range(n):
        terms = [
            math.exp(scale * float(a[i] @ p[j]))
            for i in range(n)
            if labels is None or i == j or int(labels[i]) != ref_labels[j]
        ]
        backward.append(-(scale * float(a[j] @ p[j]) - math.log(sum(terms))))
    return sum((f + b) / 2 for f, b in zip(forward, backward)) / n


@pytest.mark.parametrize("n, m", [(1, 1), (2, 2), (8, 8), (8, 13), (33, 33)])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_value_matches_the_formula(n, m, symmetric, scale):
    a = random_embeddings(n, 16, torch.float64, seed=n)
    p = a[:m] + 0.5 * random_embeddings(m, 16, torch.float64, seed=m + 1) if m == n else None
    if p is None:
        p = random_embeddings(m, 16, torch.float64, seed=m + 1)
    got = MNRL(scale=scale, symmetric=symmetric)(a, ref_emb=p)
    assert got.item() == pytest.approx(direct(a, p, scale, symmetric), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_duplicates_are_left_out_of_the_softmax(symmetric):
    a = random_embeddings(10, 8, torch.float64, seed=1)
    p = random_embeddings(14, 8, torch.float64, seed=2)
    labels = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5, 0, 6])
    got = MNRL(symmetric=symmetric)(a, labels, ref_emb=p)
    assert got.item() == pytest.approx(direct(a, p, 20.0, symmetric, labels), rel=1e-10)
    ref_labels = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5, 0, 6, 2, 0, 9, 9])
    got = MNRL(symmetric=symmetric)(a, labels, ref_emb=p, ref_labels=ref_labels)
    expected = direct(a, p, 20.0, symmetric, labels, ref_labels.tolist())
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # Distinct labels change nothing.
    torch.testing.assert_close(
        MNRL(symmetric=symmetric)(a, torch.arange(10), ref_emb=p),
        MNRL(symmetric=symmetric)(a, ref_emb=p),
    )


def test_dot_product_similarity():
    a = random_embeddings(6, 4, torch.float64, seed=3)
    p = random_embeddings(6, 4, torch.float64, seed=4)
    got = MNRL(scale=0.5, distance=distances.DotProductSimilarity(normalize_embeddings=False))(
        a, ref_emb=p
    )
    assert got.item() == pytest.approx(direct(a, p, 0.5, cosine=False), rel=1e-10)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_labels", [False, True])
def test_gradcheck(symmetric, with_labels):
    a = random_embeddings(6, 5, torch.float64, seed=5, requires_grad=True)
    p = random_embeddings(9, 5, torch.float64, seed=6, requires_grad=True)
    labels = torch.tensor([0, 1, 0, 2, 1, 3]) if with_labels else None
    loss_fn = MNRL(scale=3.0, symmetric=symmetric)
    assert torch.autograd.gradcheck(lambda x, y: loss_fn(x, labels, ref_emb=y), (a, p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_against_float64(dtype):
    a = random_embeddings(32, 16, dtype, seed=7, requires_grad=True)
    p = random_embeddings(32, 16, dtype, seed=8, requires_grad=True)
    loss = MNRL(symmetric=True)(a, ref_emb=p)
    assert loss.dtype == dtype
    a64, p64 = a.detach().double().requires_grad_(), p.detach().double().requires_grad_()
    expected = MNRL(symmetric=True)(a64, ref_emb=p64)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(loss.double(), expected.detach(), **tol)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(a.grad.double(), a64.grad, **tol)
    torch.testing.assert_close(p.grad.double(), p64.grad, **tol)


def test_perfect_pairs_give_near_zero_loss():
    a = F.normalize(torch.eye(8, dtype=torch.float64), dim=1)
    assert MNRL()(a, ref_emb=a.clone()).item() < 1e-7


def test_single_pair_gives_zero_that_backpropagates():
    a = random_embeddings(1, 8, requires_grad=True)
    p = random_embeddings(1, 8, seed=1, requires_grad=True)
    loss = MNRL(symmetric=True)(a, ref_emb=p)
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_reducers_and_regularizer():
    a = random_embeddings(10, 8, torch.float64, seed=9)
    p = random_embeddings(10, 8, torch.float64, seed=10)
    per_anchor = MNRL(reducer=reducers.DoNothingReducer())(a, ref_emb=p)["loss"]
    assert per_anchor["reduction_type"] == "element"
    assert per_anchor["losses"].shape == (10,)
    assert torch.equal(per_anchor["indices"], torch.arange(10))
    total = MNRL(reducer=reducers.SumReducer())(a, ref_emb=p)
    torch.testing.assert_close(total, per_anchor["losses"].sum())
    reg = MNRL(embedding_regularizer=regularizers.LpRegularizer())(a, ref_emb=p)
    torch.testing.assert_close(reg, per_anchor["losses"].mean() + a.norm(dim=1).mean())


def test_nonfinite_embeddings_give_nan():
    a, p = random_embeddings(8, 4), random_embeddings(8, 4, seed=1)
    p[3, 1] = float("nan")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(MNRL()(a, ref_emb=p))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(scale=0), ValueError),
        (dict(scale=-20), ValueError),
        (dict(scale="20"), TypeError),
        (dict(scale=float("nan")), ValueError),
        (dict(symmetric="yes"), TypeError),
        (dict(symmetric=1), TypeError),
        (dict(distance=distances.LpDistance()), ValueError),
        (dict(distance="cosine"), TypeError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        MNRL(**kwargs)


def test_bad_inputs():
    loss_fn = MNRL()
    a, p = random_embeddings(8, 4), random_embeddings(8, 4, seed=1)
    with pytest.raises(ValueError, match="needs ref_emb"):
        loss_fn(a)
    with pytest.raises(ValueError, match="rows"):
        loss_fn(a, ref_emb=p[:5])
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(a, None, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])), p)
    with pytest.raises(ValueError, match="without labels"):
        loss_fn(a, ref_emb=p, ref_labels=random_labels(8, 3))
    with pytest.raises(ValueError, match="embedding size"):
        loss_fn(a, ref_emb=random_embeddings(8, 5))
    with pytest.raises(ValueError, match="length"):
        loss_fn(a, torch.zeros(7, dtype=torch.long), ref_emb=p)
    with pytest.raises(ValueError, match="length"):
        loss_fn(a, torch.zeros(8, dtype=torch.long), ref_emb=p, ref_labels=random_labels(5, 2))
    loss_fn(a, torch.zeros(8), ref_emb=p)  # float labels: compared by value, as in PML
