"""MarginLoss: parity with PML (values, embedding and beta gradients), reducers, errors."""

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses import margin_loss as ml_module
from metricssl.losses.margin_loss import MarginLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

REDUCERS = {
    "divisor": ("DivisorReducer", {}),
    "avg_non_zero": ("AvgNonZeroReducer", {}),
    "mean": ("MeanReducer", {}),
    "sum": ("SumReducer", {}),
    "threshold": ("ThresholdReducer", {"low": 0.1, "high": 0.5}),
    "threshold_negative_low": ("ThresholdReducer", {"low": -1.0}),
}
BETAS = [
    dict(),
    dict(margin=0.1, beta=0.9),
    dict(learn_beta=True, nu=0.1),
    dict(learn_beta=True, nu=0.3, num_classes=50),
    dict(num_classes=50, beta=1.0),
]


def pair(reducer=None, distance=None, **kwargs):
    if distance == "CosineSimilarity":
        kwargs.setdefault("beta", 0.5)
    ours_kw, pml_kw = dict(kwargs), dict(kwargs)
    if reducer is not None:
        name, args = REDUCERS[reducer]
        ours_kw["reducer"] = getattr(reducers, name)(**args)
        pml_kw["reducer"] = getattr(pml_reducers, name)(**args)
    if distance is not None:
        ours_kw["distance"] = getattr(distances, distance)()
        pml_kw["distance"] = getattr(pml_distances, distance)()
    ours, theirs = MarginLoss(**ours_kw), pml_losses.MarginLoss(**pml_kw)
    if kwargs.get("learn_beta"):
        # PML gathers a float32 per-class beta before casting, so it sums beta's gradient in
        # float32; with float64 betas both are exact and can be compared tightly.
        for loss in (ours, theirs):
            loss.beta = torch.nn.Parameter(loss.beta.detach().double())
    return ours, theirs


def beta_grad(loss):
    return torch.zeros(len(loss.beta)) if loss.beta.grad is None else loss.beta.grad


def full_parity(ours, theirs, x, labels=None, indices_tuple=None, ref=None, ref_labels=None):
    """Value and embedding gradients via loss_parity, then beta's gradient."""
    loss_parity(ours, theirs, x, labels, indices_tuple, ref, ref_labels)
    if not ours.learn_beta:
        return
    for loss in (ours, theirs):
        loss.beta.grad = None
        leaf = x.detach().clone().requires_grad_(True)
        loss(leaf, labels, indices_tuple, ref, ref_labels).backward()
    torch.testing.assert_close(beta_grad(ours).double(), beta_grad(theirs).double())


@pytest.mark.parametrize("n,d", [(2, 4), (8, 32), (33, 4), (128, 32)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_float64_defaults(n, d, layout, distance):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    full_parity(*pair(distance=distance), x, make_labels(n, layout))


@pytest.mark.parametrize("kwargs", BETAS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("distance", ["LpDistance", "CosineSimilarity"])
def test_parity_beta_options(kwargs, layout, distance):
    x = random_embeddings(33, 8, torch.float64, seed=1)
    full_parity(*pair(distance=distance, **kwargs), x, make_labels(33, layout))


@pytest.mark.parametrize("reducer", list(REDUCERS))
@pytest.mark.parametrize("kwargs", [BETAS[0], BETAS[2], BETAS[3]])
def test_parity_reducers(reducer, kwargs):
    x = random_embeddings(33, 8, torch.float64, seed=2)
    full_parity(*pair(reducer, **kwargs), x, make_labels(33, "three"))


def test_parity_multiple_reducers():
    x = random_embeddings(30, 8, torch.float64, seed=3)

    def build(lib):
        return lib.MultipleReducers(
            {"margin_loss": lib.AvgNonZeroReducer()}, default_reducer=lib.MeanReducer()
        )

    kwargs = dict(learn_beta=True, nu=0.2, num_classes=3)
    ours = MarginLoss(reducer=build(reducers), **kwargs)
    theirs = pml_losses.MarginLoss(reducer=build(pml_reducers), **kwargs)
    for loss in (ours, theirs):
        loss.beta = torch.nn.Parameter(loss.beta.detach().double())
    full_parity(ours, theirs, x, make_labels(30, "three"))


def test_parity_do_nothing_reducer():
    x = random_embeddings(12, 4, torch.float64, seed=4)
    labels = make_labels(12, "three")
    kwargs = dict(learn_beta=True, nu=0.1, num_classes=3)
    ours = MarginLoss(reducer=reducers.DoNothingReducer(), **kwargs)(x, labels)
    theirs = pml_losses.MarginLoss(reducer=pml_reducers.DoNothingReducer(), **kwargs)(x, labels)
    for name in ["margin_loss", "beta_reg_loss"]:
        assert ours[name]["reduction_type"] == theirs[name]["reduction_type"]
        torch.testing.assert_close(ours[name]["losses"], theirs[name]["losses"])
    assert ours["margin_loss"]["divisor"] == theirs["margin_loss"]["divisor"]
    for a, b in zip(ours["margin_loss"]["indices"], theirs["margin_loss"]["indices"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs", [BETAS[0], BETAS[3]])
@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(kwargs, layout):
    x = random_embeddings(64, 16, torch.float32, seed=5)
    ours, theirs = MarginLoss(**kwargs), pml_losses.MarginLoss(**kwargs)
    v, _ = loss_parity(ours, theirs, x, make_labels(64, layout))
    assert v.dtype == torch.float32


@pytest.mark.parametrize("kwargs", [BETAS[0], BETAS[2], BETAS[3]])
@pytest.mark.parametrize("reducer", [None, "mean"])
def test_parity_bfloat16_against_float32(kwargs, reducer):
    x = random_embeddings(48, 16, torch.bfloat16, seed=6)
    labels = make_labels(48, "three")
    ours = MarginLoss(**kwargs, reducer=None if reducer is None else reducers.MeanReducer())
    theirs = pml_losses.MarginLoss(
        **kwargs, reducer=None if reducer is None else pml_reducers.MeanReducer()
    )
    v, _ = loss_parity(ours, theirs, x, labels, reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [1, 20, 70])
@pytest.mark.parametrize("kwargs", [BETAS[0], BETAS[2], BETAS[3]])
def test_parity_ref_emb(n_ref, kwargs):
    x = random_embeddings(30, 8, torch.float64, seed=7)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=8)
    labels, ref_labels = random_labels(30, 4, 1), random_labels(n_ref, 4, 2)
    full_parity(*pair(**kwargs), x, labels, ref=ref, ref_labels=ref_labels)


@pytest.mark.parametrize("miner", ["triplet", "multi_similarity"])
@pytest.mark.parametrize("kwargs", [BETAS[0], BETAS[2], BETAS[3]])
def test_parity_indices_tuple_from_pml_miner(miner, kwargs):
    x = random_embeddings(40, 8, torch.float64, seed=9)
    labels = make_labels(40, "three")
    m = (
        pml_miners.TripletMarginMiner(margin=0.2)
        if miner == "triplet"
        else pml_miners.MultiSimilarityMiner(epsilon=0.1)
    )
    full_parity(*pair(**kwargs), x, labels, indices_tuple=m(x, labels))


def test_indices_tuple_without_labels():
    x = random_embeddings(20, 8, torch.float64, seed=10)
    indices = pml_miners.TripletMarginMiner(margin=0.2)(x, make_labels(20, "three"))
    full_parity(*pair(learn_beta=True, nu=0.1), x, None, indices_tuple=indices)
    with pytest.raises(ValueError, match="num_classes"):
        MarginLoss(num_classes=3)(x, None, indices)


@pytest.mark.parametrize("per_anchor", [1, 4])
@pytest.mark.parametrize("kwargs", [BETAS[0], BETAS[3]])
def test_parity_random_triplets_seeded(per_anchor, kwargs):
    x = random_embeddings(30, 8, torch.float64, seed=11)
    ours, theirs = pair(triplets_per_anchor=per_anchor, **kwargs)
    loss_parity(ours, theirs, x, make_labels(30, "many"), seed=5)


def test_fast_path_lists_no_triplets(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the all-triplets path must not list triplets")

    monkeypatch.setattr(ml_module.lmu, "convert_to_triplets", forbidden)
    x = random_embeddings(64, 8, torch.float64, seed=12, requires_grad=True)
    for kwargs in BETAS:
        for reducer in [None, "mean", "avg_non_zero", "sum"]:
            ours, _ = pair(reducer, **kwargs)
            ours(x, make_labels(64, "three")).backward()


def test_learned_beta_is_a_parameter_and_trains():
    loss_fn = MarginLoss(learn_beta=True, nu=0.5, num_classes=3)
    assert [name for name, _ in loss_fn.named_parameters()] == ["beta"]
    assert loss_fn.beta.shape == (3,)
    x = random_embeddings(24, 8, torch.float32, seed=13)
    loss_fn(x, make_labels(24, "three")).backward()
    assert loss_fn.beta.grad is not None and (loss_fn.beta.grad != 0).all()
    assert list(MarginLoss().parameters()) == []


# -- edge cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", BETAS)
@pytest.mark.parametrize("layout", ["one_class", "singletons"])
def test_no_triplets_gives_zero_that_backpropagates(kwargs, layout):
    x = random_embeddings(6, 4, torch.float32, seed=14, requires_grad=True)
    loss = MarginLoss(**kwargs)(x, make_labels(6, layout))
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_all_terms_zero_gives_zero():
    # A huge beta band: every pair term is 0, so PML's divisor is 0.
    x = random_embeddings(20, 4, torch.float64, seed=15)
    full_parity(
        *pair(margin=-5.0, learn_beta=True, nu=0.1, num_classes=3), x, make_labels(20, "three")
    )


def test_nan_embeddings_give_nan_loss():
    x = random_embeddings(8, 4, torch.float32, seed=16)
    x[3, 2] = float("nan")
    with pytest.warns(RuntimeWarning):
        loss = MarginLoss()(x, make_labels(8, "three"))
    assert torch.isnan(loss)


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(margin="0.2"), TypeError),
        (dict(nu=None), TypeError),
        (dict(beta=float("nan")), ValueError),
        (dict(triplets_per_anchor=0), ValueError),
        (dict(triplets_per_anchor="every"), ValueError),
        (dict(learn_beta=1), TypeError),
        (dict(num_classes=0), ValueError),
        (dict(num_classes=2.0), TypeError),
        (dict(reducer="divisor"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        MarginLoss(**kwargs)


def test_bad_inputs():
    x = random_embeddings(8, 4)
    labels = make_labels(8, "three")
    with pytest.raises(ValueError, match="labels"):
        MarginLoss()(x)
    with pytest.raises(ValueError, match="num_classes=2"):
        MarginLoss(num_classes=2)(x, labels)
    with pytest.raises(ValueError, match="num_classes=3"):
        MarginLoss(num_classes=3)(x, labels - 1)
    with pytest.raises(ValueError, match="ref_labels"):
        MarginLoss()(x, labels, ref_emb=random_embeddings(5, 4))
