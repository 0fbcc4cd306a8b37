"""AngularLoss: parity with PML in values and gradients, both evaluation paths, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

import metricssl.losses.angular_loss as angular_module
from metricssl import distances, reducers
from metricssl.core import chunking
from metricssl.losses.angular_loss import AngularLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels


@pytest.fixture(params=[64, 3])
def path(request, monkeypatch):
    """Run a test with the default anchor blocks and with tiny ones (blocks spanning labels)."""
    monkeypatch.setattr(angular_module, "_BLOCK_ROWS", request.param)
    return request.param


@pytest.fixture
def small_budget():
    before = chunking.get_memory_budget()
    chunking.set_memory_budget(4096)  # a few pairs per block
    yield
    chunking.set_memory_budget(before)


@pytest.mark.parametrize("n, d", [(2, 4), (9, 32), (40, 4), (64, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout, path):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(AngularLoss(), pml_losses.AngularLoss(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", ["three", "many"])
@pytest.mark.parametrize("alpha, norm", [(20, 0.3), (40, 1.0), (55, 6.0)])
def test_parity_float32_alphas_and_norms(layout, alpha, norm, path):
    # The negatives are used unnormalised (as in PML), so their scale matters.
    x = random_embeddings(40, 16, torch.float32, seed=3) * norm
    loss_parity(
        AngularLoss(alpha=alpha), pml_losses.AngularLoss(alpha=alpha), x, make_labels(40, layout)
    )


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_bfloat16_against_float32(layout, path):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(
        AngularLoss(),
        pml_losses.AngularLoss(),
        x,
        make_labels(48, layout),
        reference_dtype=torch.float32,
    )
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [1, 5, 40])
def test_ref_emb(n_ref, path):
    x = random_embeddings(30, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(
        AngularLoss(), pml_losses.AngularLoss(), x, labels, ref_emb=ref, ref_labels=ref_labels
    )


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.MultiSimilarityMiner(epsilon=0.1),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype, path):
    x = random_embeddings(24, 16, dtype, seed=8)
    labels = random_labels(24, 4)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    loss_parity(AngularLoss(), pml_losses.AngularLoss(), x, labels, tuples)


def test_matches_the_paper_formula():
    # Eq. (8) of Wang et al. with PML's choices: a and p normalised, negatives as given.
    x = random_embeddings(10, 6, torch.float64, seed=5) * 2
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    t = math.tan(math.radians(35)) ** 2
    z = F.normalize(x, dim=1)
    losses = []
    for a in range(10):
        for p in range(10):
            if a == p or labels[a] != labels[p]:
                continue
            terms = [
                4 * t * (z[a] + z[p]) @ x[n] - 2 * (1 + t) * z[a] @ z[p]
                for n in range(10)
                if labels[n] != labels[a]
            ]
            losses.append(torch.log1p(torch.exp(torch.stack(terms)).sum()))
    expected = torch.stack(losses).mean()
    torch.testing.assert_close(AngularLoss(alpha=35)(x, labels), expected)


def test_underflowing_sums_are_recomputed_exactly():
    # Spread similarities make the row-shifted factors of some pairs underflow; those pairs
    # go through the exact path and still match a direct log-sum-exp.
    # Pair (0, 0): both terms are exp(0), but each is exp(0) * exp(-200) once shifted.
    u = torch.tensor([[100.0, -100.0, float("-inf")], [-10.0, 0.0, -5.0]])
    v = torch.tensor([[-100.0, 100.0, -1.0], [0.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    keep = torch.isfinite(u)
    a1, p = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 2, 0])
    labels, ref_labels = torch.tensor([0, 1]), torch.tensor([0, 1, 2])
    c = torch.tensor([0.5, -1.0, 2.0, 0.0])
    got = angular_module._log1p_sum_exp(u, v, c, keep, a1, p, labels, ref_labels)
    x = (u[a1] + v[p] + c.unsqueeze(1)).masked_fill(~keep[a1], float("-inf"))
    expected = torch.logsumexp(torch.cat([x, torch.zeros(4, 1)], dim=1), dim=1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got[0], torch.log1p(2 * torch.exp(c[0])))


def test_exact_pairwise_path_in_blocks(small_budget):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(6, 9, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(9, 9, dtype=torch.float64, generator=g, requires_grad=True)
    c = torch.randn(20, dtype=torch.float64, generator=g, requires_grad=True)
    keep = torch.rand(6, 9, generator=g) < 0.7
    a1, p = torch.randint(0, 6, (20,), generator=g), torch.randint(0, 9, (20,), generator=g)

    def exact(u, v, c):
        return angular_module._pairwise_log1p_sum_exp(u, v, c, keep, a1, p)

    x = (u[a1] + v[p] + c.unsqueeze(1)).masked_fill(~keep[a1], float("-inf"))
    expected = torch.logsumexp(torch.cat([x, torch.zeros(20, 1, dtype=x.dtype)], dim=1), dim=1)
    torch.testing.assert_close(exact(u, v, c), expected)
    assert torch.autograd.gradcheck(exact, (u, v, c))


def test_pairs_across_labels_from_a_hand_made_tuple():
    # Not what a PML miner gives, but PML computes it: the general (whole-matrix) path.
    x = random_embeddings(20, 8, torch.float64, seed=14)
    labels = random_labels(20, 3)
    g = torch.Generator().manual_seed(1)
    a, p, n = (torch.randint(0, 20, (30,), generator=g) for _ in range(3))
    loss_parity(AngularLoss(), pml_losses.AngularLoss(), x, labels, (a, p, n))


def test_large_norms_float32(path):
    x = random_embeddings(40, 8, torch.float32, seed=9) * 40
    loss_parity(AngularLoss(), pml_losses.AngularLoss(), x, make_labels(40, "three"))


def test_unbalanced_classes_and_repeated_pairs(path):
    x = random_embeddings(30, 8, torch.float64, seed=15)
    labels = torch.cat([torch.zeros(18, dtype=torch.long), torch.arange(1, 13) // 3 + 1])
    loss_parity(AngularLoss(), pml_losses.AngularLoss(), x, labels)
    a = torch.tensor([0, 0, 0, 20, 20, 5])
    p = torch.tensor([1, 1, 1, 21, 21, 6])
    loss_parity(AngularLoss(), pml_losses.AngularLoss(), x, labels, (a, p, a, p + 1))


@pytest.mark.parametrize(
    "name, kwargs",
    [("SumReducer", {}), ("AvgNonZeroReducer", {}), ("ThresholdReducer", dict(low=5.0))],
)
def test_reducers(name, kwargs):
    x = random_embeddings(33, 8, torch.float64, seed=11)
    labels = random_labels(33, 4)
    loss_parity(
        AngularLoss(reducer=getattr(reducers, name)(**kwargs)),
        pml_losses.AngularLoss(reducer=getattr(pml_reducers, name)(**kwargs)),
        x,
        labels,
    )


def test_do_nothing_reducer_gives_pml_elements():
    x = random_embeddings(20, 8, torch.float64, seed=12)
    labels = random_labels(20, 3)
    ours = AngularLoss(reducer=reducers.DoNothingReducer())(x, labels)["loss"]
    theirs = pml_losses.AngularLoss(reducer=pml_reducers.DoNothingReducer())(x, labels)["loss"]
    assert ours["reduction_type"] == theirs["reduction_type"] == "pos_pair"
    assert ours["losses"].shape == theirs["losses"].shape
    torch.testing.assert_close(ours["losses"], theirs["losses"])
    for a, b in zip(ours["indices"], theirs["indices"]):
        assert torch.equal(a, b)


def test_average_angle_stat():
    x = random_embeddings(24, 8, torch.float64, seed=13)
    labels = random_labels(24, 3)
    ours, theirs = AngularLoss(collect_stats=True), pml_losses.AngularLoss(collect_stats=True)
    ours(x, labels)
    theirs(x, labels)
    assert ours.average_angle == pytest.approx(theirs.average_angle, rel=1e-9)


@pytest.mark.parametrize("layout", ["singletons", "one_class"])
def test_no_positives_or_no_negatives_gives_zero_that_backpropagates(layout):
    x = random_embeddings(16, 8, requires_grad=True)
    loss = AngularLoss()(x, make_labels(16, layout))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_nonfinite_embeddings_give_nan():
    x = random_embeddings(8, 4)
    x[1, 2] = float("nan")
    with pytest.warns(RuntimeWarning):
        assert torch.isnan(AngularLoss()(x, make_labels(8, "three")))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(alpha=0), ValueError),
        (dict(alpha=90), ValueError),
        (dict(alpha=-5), ValueError),
        (dict(alpha="40"), TypeError),
        (dict(distance=distances.CosineSimilarity()), TypeError),
        (dict(distance=distances.LpDistance(power=2)), ValueError),
        (dict(distance=distances.LpDistance(normalize_embeddings=False)), ValueError),
        (dict(distance=distances.LpDistance(p=1)), ValueError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        AngularLoss(**kwargs)


def test_bad_inputs():
    loss_fn = AngularLoss()
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(x, None, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="length"):
        loss_fn(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_labels"):
        loss_fn(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))
    loss_fn(x, torch.zeros(8))  # float labels, compared by value as in PML
