"""RankedListLoss: parity with PML (hyperparameters, distances, layouts, reducers, dtypes),
warnings and errors."""

import warnings

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.ranked_list_loss import RankedListLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings

SETTINGS = [
    dict(margin=0.4, Tn=10),
    dict(margin=0.2, Tn=3, Tp=2, imbalance=0.3, alpha=1.1),
    dict(margin=1.5, Tn=1, Tp=1, imbalance=1.0),
    dict(margin=0.1, Tn=0, imbalance=0.0, alpha=0.05),
]


def pair(distance=None, reducer=None, **kwargs):
    ours_kw, pml_kw = dict(kwargs), dict(kwargs)
    if distance is not None:
        ours_kw["distance"] = getattr(distances, distance)()
        pml_kw["distance"] = getattr(pml_distances, distance)()
    if reducer is not None:
        ours_kw["reducer"] = getattr(reducers, reducer)()
        pml_kw["reducer"] = getattr(pml_reducers, reducer)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Tn=10 warns in both
        return RankedListLoss(**ours_kw), pml_losses.RankedListLoss(**pml_kw)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n,d", [(2, 4), (9, 8), (40, 16)])
@pytest.mark.parametrize("distance", [None, "CosineSimilarity"])
def test_parity_float64(layout, n, d, distance):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(*pair(distance, **SETTINGS[0]), x, make_labels(n, layout))


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("distance", [None, "CosineSimilarity", "DotProductSimilarity"])
def test_parity_settings(kwargs, distance):
    x = random_embeddings(30, 8, torch.float64, seed=1)
    loss_parity(*pair(distance, **kwargs), x, make_labels(30, "three"))


def test_parity_duplicate_embeddings():
    """Distance 0 between distinct samples: PML skips such pairs, and so do we."""
    x = random_embeddings(12, 4, torch.float64, seed=2)
    x[6:] = x[:6]
    loss_parity(*pair(**SETTINGS[1]), x, make_labels(12, "three"))


@pytest.mark.parametrize("layout", ["three", "many"])
def test_parity_float32(layout):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    v, _ = loss_parity(*pair(**SETTINGS[0]), x, make_labels(64, layout))
    assert v.dtype == torch.float32


def test_parity_bfloat16_against_float32():
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    ours, theirs = pair(**SETTINGS[1])
    v, _ = loss_parity(ours, theirs, x, make_labels(48, "three"), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("reducer", ["SumReducer", "AvgNonZeroReducer", "PerAnchorReducer"])
def test_parity_reducers(reducer):
    x = random_embeddings(30, 8, torch.float64, seed=5)
    loss_parity(*pair(reducer=reducer, **SETTINGS[0]), x, make_labels(30, "many"))


def test_parity_do_nothing_reducer():
    x = random_embeddings(20, 8, torch.float64, seed=6)
    labels = make_labels(20, "many")
    ours, theirs = pair(reducer="DoNothingReducer", **SETTINGS[1])
    a, b = ours(x, labels)["loss"], theirs(x, labels)["loss"]
    torch.testing.assert_close(a["losses"], b["losses"])
    assert torch.equal(a["indices"], b["indices"])


def test_no_positives_and_no_violations_backpropagate():
    x = random_embeddings(6, 4, torch.float64, seed=7, requires_grad=True)
    # Far apart singletons: no positive, and no negative inside alpha.
    value = RankedListLoss(margin=0.1, Tn=1, alpha=0.01)(x * 10, torch.arange(6))
    assert value.item() == 0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_alpha_default_and_attributes_match_pml():
    ours, theirs = pair(margin=0.6, Tn=2, Tp=1)
    for name in ["margin", "Tn", "Tp", "imbalance", "alpha"]:
        assert getattr(ours, name) == getattr(theirs, name)
    assert ours.alpha == pytest.approx(1.3)
    assert type(ours.distance).__name__ == "LpDistance"


def test_high_temperature_warns():
    with pytest.warns(UserWarning, match="Tp or Tn"):
        RankedListLoss(margin=0.4, Tn=6)
    with pytest.warns(UserWarning, match="Tp or Tn"):
        RankedListLoss(margin=0.4, Tn=1, Tp=5.5)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(margin=0.4), TypeError),  # Tn is required, as in PML
        (dict(margin=0.4, Tn=1, imbalance=1.5), ValueError),
        (dict(margin=0.4, Tn=1, imbalance=-0.1), ValueError),
        (dict(margin="0.4", Tn=1), TypeError),
        (dict(margin=0.4, Tn=None), TypeError),
        (dict(margin=0.4, Tn=1, alpha="1"), TypeError),
        (dict(margin=0.4, Tn=1, Tp=float("nan")), ValueError),
        (dict(margin=0.4, Tn=1, distance="cosine"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        RankedListLoss(**kwargs)


def test_bad_inputs():
    x, labels = torch.randn(6, 4), make_labels(6, "three")
    loss = RankedListLoss(margin=0.4, Tn=1)
    with pytest.raises(ValueError, match="needs labels"):
        loss(x)
    with pytest.raises(ValueError, match="ref_emb"):
        loss(x, labels, ref_emb=torch.randn(6, 4), ref_labels=labels)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(x, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
