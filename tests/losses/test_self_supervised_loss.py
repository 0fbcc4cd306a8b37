"""SelfSupervisedLoss: parity with PML's wrapper, supported-loss check, bad inputs."""

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from metricssl.losses.multi_similarity_loss import MultiSimilarityLoss
from metricssl.losses.n_pairs_loss import NPairsLoss
from metricssl.losses.ntxent_loss import NTXentLoss
from metricssl.losses.self_supervised_loss import SelfSupervisedLoss
from metricssl.losses.supcon_loss import SupConLoss
from tests.parity import TOLERANCES, random_embeddings


def wrapped_parity(ours, theirs, emb, ref, **tol):
    tol = {**TOLERANCES[emb.dtype], **tol}
    e1, r1 = emb.clone().requires_grad_(), ref.clone().requires_grad_()
    e2, r2 = emb.clone().requires_grad_(), ref.clone().requires_grad_()
    v1, v2 = ours(e1, r1), theirs(e2, r2)
    torch.testing.assert_close(v1, v2, **tol)
    for g1, g2 in zip(torch.autograd.grad(v1, [e1, r1]), torch.autograd.grad(v2, [e2, r2])):
        torch.testing.assert_close(g1, g2, **tol)
    return v1


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (NTXentLoss, pml_losses.NTXentLoss),
        (SupConLoss, pml_losses.SupConLoss),
        (MultiSimilarityLoss, pml_losses.MultiSimilarityLoss),
        (pml_losses.TripletMarginLoss, pml_losses.TripletMarginLoss),
    ],
)
@pytest.mark.parametrize("batch", [2, 16])
def test_parity_with_pml(symmetric, ours, theirs, batch):
    emb = random_embeddings(batch, 8, torch.float64, seed=1)
    ref = random_embeddings(batch, 8, torch.float64, seed=2)
    wrapped_parity(
        SelfSupervisedLoss(ours(), symmetric=symmetric),
        pml_losses.SelfSupervisedLoss(theirs(), symmetric=symmetric),
        emb,
        ref,
    )


def test_symmetric_ntxent_is_simclr():
    # The symmetric form is NT-Xent over the 2B stacked views with instance-id labels.
    emb = random_embeddings(12, 8, torch.float64, seed=3)
    ref = random_embeddings(12, 8, torch.float64, seed=4)
    ids = torch.arange(12)
    expected = NTXentLoss(temperature=0.2)(torch.cat([emb, ref]), torch.cat([ids, ids]))
    got = SelfSupervisedLoss(NTXentLoss(temperature=0.2))(emb, ref)
    torch.testing.assert_close(got, expected)


def test_bfloat16():
    emb = random_embeddings(16, 8, torch.bfloat16, seed=5)
    ref = random_embeddings(16, 8, torch.bfloat16, seed=6)
    got = SelfSupervisedLoss(NTXentLoss())(emb, ref)
    expected = pml_losses.SelfSupervisedLoss(pml_losses.NTXentLoss())(emb.float(), ref.float())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, **TOLERANCES[torch.bfloat16])


def test_supported_losses_mirror_pml():
    assert SelfSupervisedLoss.supported_losses() == pml_losses.SelfSupervisedLoss.supported_losses()


def test_unsupported_loss_is_refused():
    with pytest.raises(TypeError, match="NPairsLoss"):
        SelfSupervisedLoss(NPairsLoss())
    with pytest.raises(TypeError, match="supported losses"):
        SelfSupervisedLoss(torch.nn.MSELoss())


def test_bad_arguments_and_inputs():
    with pytest.raises(TypeError, match="symmetric"):
        SelfSupervisedLoss(NTXentLoss(), symmetric=1)
    loss_fn = SelfSupervisedLoss(NTXentLoss())
    emb = random_embeddings(8, 4)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(emb, random_embeddings(7, 4))
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(emb, random_embeddings(8, 5))
    with pytest.raises(TypeError):
        loss_fn(emb, emb.numpy())
    with pytest.raises(ValueError):
        loss_fn(emb[0], emb[0])


def test_is_a_module_that_holds_the_loss():
    inner = NTXentLoss()
    loss_fn = SelfSupervisedLoss(inner)
    assert isinstance(loss_fn, torch.nn.Module)
    assert loss_fn.loss is inner and loss_fn.symmetric
