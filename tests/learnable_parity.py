"""Parity against PML for losses with learnable weights (proxies, class centres).

Besides the value and the gradient w.r.t. the embeddings (tests.parity.loss_parity), these
compare the gradient w.r.t. the loss's own parameters, and a few SGD steps where the loss's
parameters have their own optimizer, as in PML's examples.
"""

from __future__ import annotations

import copy

import torch

from tests.parity import TOLERANCES


def copy_parameters(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Give ``ours`` PML's parameter values: PML's state_dict loads strictly (same names)."""
    ours.load_state_dict(theirs.state_dict())
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert n1 == n2 and torch.equal(p1.detach().to(p2.dtype), p2.detach()), n1


def weight_parity(
    ours,
    theirs,
    embeddings,
    labels=None,
    indices_tuple=None,
    reference_dtype=None,
    seed=None,
    **tol,
):
    """Assert equal value and gradients (embeddings and parameters); returns both values.

    The parameters of ``ours`` are first set to those of ``theirs``. ``reference_dtype`` runs
    PML on embeddings cast to that dtype (float32 for half inputs); ``seed`` reseeds torch
    before each call.
    """
    copy_parameters(ours, theirs)
    tol = {**TOLERANCES[embeddings.dtype], **tol}
    e1 = embeddings.detach().clone().requires_grad_(True)
    e2 = embeddings.detach().clone().to(reference_dtype or embeddings.dtype).requires_grad_(True)
    if seed is not None:
        torch.manual_seed(seed)
    v1 = ours(e1, labels, indices_tuple)
    if seed is not None:
        torch.manual_seed(seed)
    v2 = theirs(e2, labels, indices_tuple)
    assert v1.dtype == embeddings.dtype
    torch.testing.assert_close(v1.detach().double(), v2.detach().double().reshape(v1.shape), **tol)
    p1, p2 = list(ours.parameters()), list(theirs.parameters())
    g1 = torch.autograd.grad(v1, [e1, *p1], allow_unused=True)
    g2 = torch.autograd.grad(v2, [e2, *p2], allow_unused=True)
    for a, b, like in zip(g1, g2, [e1, *p1]):
        a = torch.zeros_like(like) if a is None else a
        b = torch.zeros_like(like) if b is None else b
        assert a.dtype == like.dtype
        torch.testing.assert_close(a.double(), b.double(), **tol)
    return v1, v2


def sgd_parity(
    ours, theirs, embeddings, labels, indices_tuple=None, steps=3, lr=0.05, seed=None, **tol
):
    """A linear model + the loss, trained for ``steps`` SGD steps in both libraries.

    The loss's parameters get a separate optimizer (momentum, weight decay), as in PML's
    examples; model and loss parameters must stay equal after every step.
    """
    copy_parameters(ours, theirs)
    tol = {**TOLERANCES[embeddings.dtype], **tol}
    dim = embeddings.shape[1]
    model1 = torch.nn.Linear(dim, dim, dtype=embeddings.dtype)
    model2 = copy.deepcopy(model1)
    opts = []
    for model, loss in [(model1, ours), (model2, theirs)]:
        opts.append(
            (
                torch.optim.SGD(model.parameters(), lr=lr),
                torch.optim.SGD(loss.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4),
            )
        )
    for _ in range(steps):
        for model, loss, (opt_model, opt_loss) in zip((model1, model2), (ours, theirs), opts):
            opt_model.zero_grad()
            opt_loss.zero_grad()
            if seed is not None:
                torch.manual_seed(seed)
            loss(model(embeddings), labels, indices_tuple).backward()
            opt_model.step()
            opt_loss.step()
        for a, b in zip(
            [*model1.parameters(), *ours.parameters()], [*model2.parameters(), *theirs.parameters()]
        ):
            torch.testing.assert_close(a.detach().double(), b.detach().double(), **tol)
