"""MultipleLosses: parity with PML in list and dict forms, with miners and weights; errors."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from metricssl.losses.multiple_losses import MultipleLosses
from metricssl.losses.n_pairs_loss import NPairsLoss
from metricssl.losses.ntxent_loss import NTXentLoss
from metricssl.losses.supcon_loss import SupConLoss
from tests.parity import TOLERANCES, random_embeddings, random_labels


def parity(ours, theirs, x, labels, indices_tuple=None):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    v1, v2 = ours(x1, labels, indices_tuple), theirs(x2, labels, indices_tuple)
    tol = TOLERANCES[x.dtype]
    torch.testing.assert_close(v1, v2, **tol)
    v1.backward()
    v2.backward()
    torch.testing.assert_close(x1.grad, x2.grad, **tol)
    return v1


def ours_and_pml(form, with_miners, with_weights):
    ours = [NTXentLoss(temperature=0.2), SupConLoss(), NPairsLoss()]
    theirs = [
        pml_losses.NTXentLoss(temperature=0.2),
        pml_losses.SupConLoss(),
        pml_losses.NPairsLoss(),
    ]
    miners = [pml_miners.MultiSimilarityMiner(0.1), None, pml_miners.BatchHardMiner()]
    weights = [0.5, 2.0, 1.5]
    keys = ["nt", "sc", "np"]
    kw = {}
    if form == "dict":
        ours, theirs = dict(zip(keys, ours)), dict(zip(keys, theirs))
        miners = {k: m for k, m in zip(keys, miners) if m is not None}
        weights = dict(zip(keys, weights))
    if with_miners:
        kw["miners"] = miners
    if with_weights:
        kw["weights"] = weights
    return MultipleLosses(ours, **kw), pml_losses.MultipleLosses(theirs, **kw)


@pytest.mark.parametrize("form", ["list", "dict"])
@pytest.mark.parametrize("with_miners", [False, True])
@pytest.mark.parametrize("with_weights", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_parity_with_pml(form, with_miners, with_weights, dtype):
    ours, theirs = ours_and_pml(form, with_miners, with_weights)
    x = random_embeddings(32, 8, dtype, seed=1)
    parity(ours, theirs, x, random_labels(32, 5))


def test_indices_tuple_is_passed_to_every_loss():
    ours, theirs = ours_and_pml("list", False, True)
    x = random_embeddings(32, 8, torch.float64, seed=2)
    labels = random_labels(32, 4)
    tuples = pml_miners.MultiSimilarityMiner(0.2)(x, labels)
    parity(ours, theirs, x, labels, tuples)


def test_tuple_and_tensor_weights():
    x = random_embeddings(16, 8, torch.float64, seed=3)
    labels = random_labels(16, 3)
    a = MultipleLosses((NTXentLoss(), SupConLoss()), weights=(1, torch.tensor(0.25)))
    expected = NTXentLoss()(x, labels) + 0.25 * SupConLoss()(x, labels)
    torch.testing.assert_close(a(x, labels), expected)


def test_submodules_are_registered():
    loss_fn = MultipleLosses(
        {"a": NTXentLoss(), "b": SupConLoss()}, miners={"b": pml_miners.BatchHardMiner()}
    )
    names = {n for n, _ in loss_fn.named_modules()}
    assert {"losses.a", "losses.b", "miners.b"} <= names


def test_miners_and_indices_tuple_are_exclusive():
    loss_fn = MultipleLosses([NTXentLoss()], miners=[pml_miners.BatchHardMiner()])
    x, labels = random_embeddings(8, 4), random_labels(8, 2)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss_fn(x, labels, pml_miners.BatchHardMiner()(x, labels))


@pytest.mark.parametrize(
    "args, error, match",
    [
        (dict(losses=NTXentLoss()), TypeError, "list or a dict"),
        (dict(losses=[]), ValueError, "empty"),
        (dict(losses=[lambda x: x]), TypeError, "Module"),
        (dict(losses=[NTXentLoss()], miners=[None, None]), ValueError, "entries"),
        (dict(losses=[NTXentLoss()], miners={"a": None}), TypeError, "list"),
        (dict(losses=[NTXentLoss()], miners=["miner"]), TypeError, "miner"),
        (dict(losses=[NTXentLoss()], weights=[1, 2]), ValueError, "entries"),
        (dict(losses=[NTXentLoss()], weights=["1"]), TypeError, "number"),
        (dict(losses={"a": NTXentLoss()}, weights={"b": 1}), ValueError, "keys"),
        (dict(losses={"a": NTXentLoss()}, weights={"a": 1, "b": 1}), ValueError, "keys"),
        (
            dict(losses={"a": NTXentLoss()}, miners={"b": pml_miners.BatchHardMiner()}),
            ValueError,
            "keys",
        ),
        (dict(losses={"a": NTXentLoss()}, weights=[1]), TypeError, "dict"),
    ],
)
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        MultipleLosses(**args)
