"""Parity helpers for losses with a learnable class-weight matrix (W / weight).

Both libraries are built from the same RNG state (they draw the same initial weights, which
is itself checked), then compared on values, gradients w.r.t. the embeddings AND the weights,
``get_logits``, and a few SGD steps on the weights and the embeddings.
"""

from __future__ import annotations

import pytest
import torch

from tests.parity import TOLERANCES


def weights_of(loss):
    return loss.weight if hasattr(loss, "weight") else loss.W


def make_pair(ours_cls, pml_cls, *args, dtype=torch.float64, seed=0, ours_kwargs=None, **kwargs):
    """(ours, PML's) with the weights each drew from the same seed, converted to ``dtype``."""
    torch.manual_seed(seed)
    theirs = pml_cls(*args, **kwargs)
    torch.manual_seed(seed)
    ours = ours_cls(*args, **{**kwargs, **(ours_kwargs or {})})
    assert torch.equal(weights_of(ours), weights_of(theirs)), "initial weights differ"
    return ours.to(dtype), theirs.to(dtype)


def _leaf(x, dtype=None):
    return x.detach().clone().to(dtype or x.dtype).requires_grad_(True)


def weight_loss_parity(
    ours, theirs, embeddings, labels, indices_tuple=None, reference_dtype=None, **tol
):
    """Value and gradients (embeddings and weights) of ours == PML's; returns our value.

    ``reference_dtype`` runs PML on embeddings cast to it (float32 for half inputs).
    """
    tol = {**TOLERANCES[embeddings.dtype], **tol}
    weights_of(ours).grad = weights_of(theirs).grad = None
    e1, e2 = _leaf(embeddings), _leaf(embeddings, reference_dtype)
    v1 = ours(e1, labels, indices_tuple)
    v2 = theirs(e2, labels, indices_tuple)
    assert v1.dtype == embeddings.dtype
    torch.testing.assert_close(v1.detach().double(), v2.detach().double(), **tol)
    v1.backward()
    v2.backward()
    torch.testing.assert_close(e1.grad.double(), e2.grad.double(), **tol)
    w1, w2 = weights_of(ours), weights_of(theirs)
    assert w1.grad is not None and w1.grad.dtype == w1.dtype
    torch.testing.assert_close(w1.grad.double(), w2.grad.double(), **tol)
    return v1


def logits_parity(ours, theirs, embeddings, **tol):
    tol = {**TOLERANCES[embeddings.dtype], **tol}
    logits = ours.get_logits(embeddings)
    assert logits.dtype == embeddings.dtype
    torch.testing.assert_close(logits.double(), theirs.get_logits(embeddings).double(), **tol)


def sgd_parity(ours, theirs, embeddings, labels, steps=3, lr=0.5, **tol):
    """A few SGD steps on the loss weights (their own optimizer) and on the embeddings."""
    tol = {**TOLERANCES[embeddings.dtype], **tol}
    e1, e2 = _leaf(embeddings), _leaf(embeddings)
    opt1 = torch.optim.SGD([weights_of(ours), e1], lr=lr)
    opt2 = torch.optim.SGD([weights_of(theirs), e2], lr=lr)
    for _ in range(steps):
        for opt, loss, e in ((opt1, ours, e1), (opt2, theirs, e2)):
            opt.zero_grad()
            loss(e, labels).backward()
            opt.step()
        torch.testing.assert_close(weights_of(ours).detach(), weights_of(theirs).detach(), **tol)
        torch.testing.assert_close(e1.detach(), e2.detach(), **tol)


def check_bad_inputs(loss_fn, embedding_size, num_classes, size_name="embedding_size"):
    """Missing or out-of-range labels, a wrong width and a ref_emb give clear errors."""
    x = torch.randn(5, embedding_size)
    ok = torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="needs labels"):
        loss_fn(x)
    for bad in (num_classes, -1):
        labels = ok.clone()
        labels[2] = bad
        with pytest.raises(ValueError, match=rf"labels must be class ids in \[0, {num_classes}\)"):
            loss_fn(x, labels)
    with pytest.raises(ValueError, match=f"{size_name}={embedding_size}"):
        loss_fn(torch.randn(5, embedding_size + 1), ok)
    with pytest.raises(ValueError, match="ref_emb"):
        loss_fn(x, ok, ref_emb=x.clone(), ref_labels=ok)
    with pytest.raises(ValueError, match="whole numbers"):
        loss_fn(x, ok.float() + 0.5)
    if hasattr(loss_fn, "get_logits"):
        with pytest.raises(ValueError, match=f"{size_name}={embedding_size}"):
            loss_fn.get_logits(torch.randn(5, embedding_size + 1))
