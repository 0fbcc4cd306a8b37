"""SignalToNoiseRatioContrastiveLoss: parity with PML in values and gradients, errors, edge cases."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers

from metricssl import distances, reducers
from metricssl.losses.signal_to_noise_ratio_losses import SignalToNoiseRatioContrastiveLoss
from tests.parity import LAYOUTS, loss_parity, make_labels, random_embeddings, random_labels

Ours, Theirs = SignalToNoiseRatioContrastiveLoss, pml_losses.SignalToNoiseRatioContrastiveLoss


@pytest.mark.parametrize("n", [2, 8, 33, 128])
@pytest.mark.parametrize("d", [4, 32])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    x = random_embeddings(n, d, torch.float64, seed=n + d)
    loss_parity(Ours(), Theirs(), x, make_labels(n, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("args", [{}, dict(pos_margin=0.3, neg_margin=1.5)])
def test_parity_float32_and_arguments(layout, args):
    x = random_embeddings(64, 16, torch.float32, seed=3)
    loss_parity(Ours(**args), Theirs(**args), x, make_labels(64, layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_bfloat16_against_float32(layout):
    x = random_embeddings(48, 16, torch.bfloat16, seed=4)
    v, _ = loss_parity(Ours(), Theirs(), x, make_labels(48, layout), reference_dtype=torch.float32)
    assert v.dtype == torch.bfloat16


@pytest.mark.parametrize("n_ref", [5, 40, 70])
def test_ref_emb(n_ref):
    x = random_embeddings(40, 8, torch.float64, seed=6)
    ref = random_embeddings(n_ref, 8, torch.float64, seed=7)
    labels, ref_labels = random_labels(40, 4, 1), random_labels(n_ref, 4, 2)
    loss_parity(Ours(), Theirs(), x, labels, ref_emb=ref, ref_labels=ref_labels)


@pytest.mark.parametrize(
    "miner",
    [
        pml_miners.PairMarginMiner(pos_margin=0.2, neg_margin=0.8),
        pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all"),
        pml_miners.BatchHardMiner(),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 6)
    loss_parity(Ours(), Theirs(), x, labels, miner(x, labels))


def test_indices_tuple_bfloat16():
    x = random_embeddings(48, 16, torch.bfloat16, seed=9)
    labels = random_labels(48, 5)
    tuples = pml_miners.TripletMarginMiner(margin=0.2)(x.float(), labels)
    loss_parity(Ours(), Theirs(), x, labels, tuples, reference_dtype=torch.float32)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.MeanReducer(),
        lambda r: r.SumReducer(),
        lambda r: r.ThresholdReducer(low=0.5),
        lambda r: r.MultipleReducers({"pos_loss": r.MeanReducer(), "neg_loss": r.SumReducer()}),
        # One sub-loss not fusable: both take PML's per-pair path.
        lambda r: r.MultipleReducers(
            {
                "pos_loss": r.ClassWeightedReducer(torch.arange(1.0, 5.0)),
                "neg_loss": r.MeanReducer(),
            }
        ),
    ],
    ids=["mean", "sum", "threshold", "multiple", "class_weighted"],
)
def test_custom_reducers(make):
    x = random_embeddings(33, 8, torch.float64, seed=10)
    labels = random_labels(33, 4)
    loss_parity(Ours(reducer=make(reducers)), Theirs(reducer=make(pml_reducers)), x, labels)


def test_do_nothing_reducer_gives_pml_pairs():
    x = random_embeddings(20, 8, torch.float64, seed=11)
    labels = random_labels(20, 3)
    ours = Ours(reducer=reducers.DoNothingReducer())(x, labels)
    theirs = Theirs(reducer=pml_reducers.DoNothingReducer())(x, labels)
    for name, kind in [("pos_loss", "pos_pair"), ("neg_loss", "neg_pair")]:
        assert ours[name]["reduction_type"] == theirs[name]["reduction_type"] == kind
        torch.testing.assert_close(ours[name]["losses"], theirs[name]["losses"])
        for a, b in zip(ours[name]["indices"], theirs[name]["indices"]):
            torch.testing.assert_close(a, b)


def test_empty_indices_tuple_gives_zero_that_backpropagates():
    x = random_embeddings(16, 8, requires_grad=True)
    empty = torch.tensor([], dtype=torch.long)
    loss = Ours()(x, random_labels(16, 3), (empty, empty, empty, empty))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_margins_met_give_zero_that_backpropagates():
    # Negative margin below every SNR distance and positive margin above it: nothing is kept.
    x = random_embeddings(16, 8, requires_grad=True)
    loss = Ours(pos_margin=100, neg_margin=0)(x, random_labels(16, 3))
    assert loss.item() == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_distance_must_be_snr():
    with pytest.raises(TypeError, match="SNRDistance"):
        Ours(distance=distances.LpDistance())


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(pos_margin="0"), TypeError),
        (dict(neg_margin=None), TypeError),
        (dict(neg_margin=float("nan")), ValueError),
        (dict(reducer="mean"), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Ours(**kwargs)


def test_bad_inputs():
    x = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="labels"):
        Ours()(x)
    with pytest.raises(ValueError, match="ref_labels"):
        Ours()(x, torch.zeros(8, dtype=torch.long), ref_emb=random_embeddings(5, 4))


def test_is_a_contrastive_loss_like_pml():
    from metricssl.losses.contrastive_loss import ContrastiveLoss

    assert isinstance(Ours(), ContrastiveLoss)
    assert issubclass(Theirs, pml_losses.ContrastiveLoss)


def test_default_path_does_not_list_pairs(monkeypatch):
    from metricssl.core import loss_and_miner_utils

    def fail(*args, **kwargs):
        raise AssertionError("pairs were listed")

    monkeypatch.setattr(loss_and_miner_utils, "convert_to_pairs", fail)
    x = random_embeddings(16, 8, requires_grad=True)
    Ours()(x, random_labels(16, 3)).backward()
