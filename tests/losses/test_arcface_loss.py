"""ArcFaceLoss: parity with PML (values, gradients w.r.t. embeddings and W, logits, SGD steps),
errors and the float-step clamp before acos."""

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers as pml_reducers
from pytorch_metric_learning import regularizers as pml_regularizers

from metricssl import reducers, regularizers
from metricssl.distances import LpDistance
from metricssl.losses.arcface_loss import ArcFaceLoss
from tests.classification_parity import (
    check_bad_inputs,
    logits_parity,
    make_pair,
    sgd_parity,
    weight_loss_parity,
)
from tests.parity import LAYOUTS, make_labels, random_embeddings, random_labels

Ours, Theirs = ArcFaceLoss, pml_losses.ArcFaceLoss
C = 70  # >= every batch size below, so "singletons" labels are valid classes


@pytest.mark.parametrize("n, d", [(1, 4), (7, 32), (64, 16)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_parity_float64(n, d, layout):
    ours, theirs = make_pair(Ours, Theirs, num_classes=C, embedding_size=d, seed=n + d)
    x = random_embeddings(n, d, torch.float64, seed=n)
    weight_loss_parity(ours, theirs, x, make_labels(n, layout))


@pytest.mark.parametrize(
    "args", [dict(margin=0, scale=1), dict(margin=10.0, scale=16), dict(margin=60, scale=30)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_arguments(args, dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 16, dtype=dtype, **args)
    x = random_embeddings(40, 16, dtype, seed=2)
    weight_loss_parity(ours, theirs, x, random_labels(40, 5))


def test_parity_float32_defaults():
    ours, theirs = make_pair(Ours, Theirs, 12, 32, dtype=torch.float32)
    x = random_embeddings(48, 32, torch.float32, seed=3)
    weight_loss_parity(ours, theirs, x, make_labels(48, "many") % 12)


def test_parity_bfloat16_against_float32():
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=torch.float32, scale=16)
    x = random_embeddings(40, 16, torch.bfloat16, seed=4)
    v = weight_loss_parity(
        ours, theirs, x, random_labels(40, 6), reference_dtype=torch.float32, rtol=5e-2
    )
    assert v.dtype == torch.bfloat16
    assert ours.W.dtype == torch.bfloat16  # as in PML, the weights follow the input


@pytest.mark.parametrize(
    "miner", [pml_miners.MultiSimilarityMiner(epsilon=0.1), pml_miners.BatchHardMiner()]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_indices_tuple_from_miner(miner, dtype):
    ours, theirs = make_pair(Ours, Theirs, 6, 16, dtype=dtype)
    x = random_embeddings(48, 16, dtype, seed=8)
    labels = random_labels(48, 6)
    tuples = miner(x, labels)
    assert len(tuples[0]) > 0
    weight_loss_parity(ours, theirs, x, labels, tuples)


def test_empty_indices_tuple_weighs_every_sample():
    ours, theirs = make_pair(Ours, Theirs, 4, 8)
    x = random_embeddings(16, 8, torch.float64)
    empty = tuple(torch.empty(0, dtype=torch.long) for _ in range(3))
    weight_loss_parity(ours, theirs, x, random_labels(16, 4), empty)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_get_logits(dtype):
    ours, theirs = make_pair(Ours, Theirs, 9, 16, dtype=dtype)
    logits_parity(ours, theirs, random_embeddings(20, 16, dtype, seed=5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_stay_equal(dtype):
    ours, theirs = make_pair(Ours, Theirs, 5, 8, dtype=dtype, scale=8)
    x = random_embeddings(30, 8, dtype, seed=6)
    sgd_parity(ours, theirs, x, random_labels(30, 5))


@pytest.mark.parametrize(
    "ours_reducer, pml_reducer",
    [
        (reducers.SumReducer(), pml_reducers.SumReducer()),
        (reducers.ThresholdReducer(low=5), pml_reducers.ThresholdReducer(low=5)),
        (reducers.DoNothingReducer(), None),
    ],
)
def test_reducers(ours_reducer, pml_reducer):
    torch.manual_seed(0)
    theirs = Theirs(5, 8, reducer=pml_reducer or pml_reducers.DoNothingReducer())
    torch.manual_seed(0)
    ours = Ours(5, 8, reducer=ours_reducer)
    x, y = random_embeddings(20, 8, torch.float64), random_labels(20, 5)
    a, b = ours.double()(x, y), theirs.double()(x, y)
    if pml_reducer is None:
        assert torch.equal(a["loss"]["indices"], b["loss"]["indices"])
        torch.testing.assert_close(a["loss"]["losses"], b["loss"]["losses"])
    else:
        torch.testing.assert_close(a, b)


def test_weight_regularizer():
    ours, theirs = make_pair(
        Ours,
        Theirs,
        5,
        8,
        weight_reg_weight=0.3,
        weight_regularizer=pml_regularizers.LpRegularizer(),
        ours_kwargs=dict(weight_regularizer=regularizers.LpRegularizer()),
    )
    assert set(ours.reducer.reducers) == {"loss", "weight_reg_loss"}
    weight_loss_parity(ours, theirs, random_embeddings(20, 8, torch.float64), random_labels(20, 5))


def test_collect_stats_avg_angle():
    ours, theirs = make_pair(Ours, Theirs, 5, 8, collect_stats=True)
    x, y = random_embeddings(20, 8, torch.float64), random_labels(20, 5)
    ours(x, y), theirs(x, y)
    assert ours.avg_angle == pytest.approx(theirs.avg_angle, rel=1e-9)
    assert "avg_angle" in ours._record_these_stats


def test_defaults_and_attributes_match_pml():
    ours, theirs = make_pair(Ours, Theirs, 5, 8)
    assert ours.margin == pytest.approx(theirs.margin)  # radians, as in PML
    assert (ours.scale, ours.num_classes) == (theirs.scale, theirs.num_classes)
    assert ours.W.shape == theirs.W.shape == (8, 5)
    assert type(ours.distance).__name__ == type(theirs.distance).__name__
    assert type(ours.reducer).__name__ == type(theirs.reducer).__name__
    ours.load_state_dict(theirs.state_dict())  # checkpoints are interchangeable
    theirs.load_state_dict(ours.state_dict())
    assert [name for name, _ in ours.named_parameters()] == ["W"]


def test_embedding_on_its_class_direction_has_finite_gradient():
    loss_fn = Ours(3, 4)
    x = loss_fn.W.detach().t()[:2].clone().requires_grad_(True)  # cosine exactly 1
    loss = loss_fn(x, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert torch.isfinite(loss_fn.W.grad).all()


def test_margin_keeps_target_logit_decreasing():
    # Past theta = pi - margin the target logit switches to cos(theta) - m sin(m).
    loss_fn = Ours(2, 2, margin=60).double()
    theta = torch.linspace(0.01, math.pi - 0.01, 200, dtype=torch.float64)
    modified = loss_fn.modify_cosine_of_target_classes(torch.cos(theta))
    assert (modified.diff() < 0).all()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(num_classes=0), ValueError),
        (dict(num_classes=2.5), TypeError),
        (dict(embedding_size=0), ValueError),
        (dict(embedding_size="4"), TypeError),
        (dict(margin=180), ValueError),
        (dict(margin=float("nan")), ValueError),
        (dict(scale=0), ValueError),
        (dict(scale=float("inf")), ValueError),
        (dict(distance=LpDistance()), TypeError),
        (dict(weight_init_func="normal"), TypeError),
        (dict(weight_reg_weight=None), TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    (name,) = kwargs
    with pytest.raises(error, match=name if name != "distance" else "CosineSimilarity"):
        Ours(**{"num_classes": 3, "embedding_size": 4, **kwargs})


def test_bad_inputs():
    check_bad_inputs(Ours(3, 4), embedding_size=4, num_classes=3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_moves_w_keeps_its_dtype_and_matches_cpu(dtype):
    torch.manual_seed(0)
    loss_fn = Ours(7, 16)
    w0 = loss_fn.W
    optimizer = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    x = random_embeddings(32, 16, torch.float32, seed=1)
    y = random_labels(32, 7)
    cpu = loss_fn(x.to(dtype).float(), y)
    gpu = loss_fn(x.to(dtype).cuda(), y.cuda())
    assert loss_fn.W is w0 and loss_fn.W.is_cuda and loss_fn.W.dtype == torch.float32
    assert gpu.dtype == dtype
    torch.testing.assert_close(gpu.float().cpu(), cpu, rtol=1e-2, atol=1e-2)
    gpu.backward()
    optimizer.step()  # the optimizer still holds the (moved) parameter
    with pytest.raises(ValueError, match="class ids"):
        loss_fn(x.cuda(), torch.full((32,), 7, device="cuda"))
