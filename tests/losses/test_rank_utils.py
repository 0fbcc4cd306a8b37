"""rank_utils: soft rank counts against a dense reference, gradcheck, chunking invariance."""

import pytest
import torch

from metricssl.core import chunking
from metricssl.losses.rank_utils import (
    reject_indices_tuple,
    reject_ref_emb,
    row_columns,
    soft_rank_counts,
)


@pytest.fixture
def tiny_budget():
    before = chunking.get_memory_budget()
    chunking.set_memory_budget(512)  # one anchor row per block
    yield
    chunking.set_memory_budget(before)


def dense_reference(sim, cols, valid, masks, temperature, clamped):
    """The N x k x M tensor written out, with autograd doing the gradient."""
    diff = sim.unsqueeze(1) - sim.gather(1, cols).unsqueeze(2)
    if clamped:
        sig = 1 / (1 + torch.exp(torch.clamp(-diff / temperature, -50, 50)))
    else:
        sig = torch.sigmoid(diff / temperature)
    not_self = torch.arange(sim.shape[1]) != cols.unsqueeze(2)
    outs = [(sig * (m.unsqueeze(1) & not_self)).sum(dim=2) for m in masks]
    return torch.stack(outs, dim=2) * valid.unsqueeze(2)


def random_case(n=10, m=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = n if m is None else m
    sim = torch.rand(n, m, generator=g, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 3, (max(n, m),), generator=g)
    same = labels[:n].unsqueeze(1) == labels[:m].unsqueeze(0)
    cols, valid = row_columns(same)
    return sim, cols, valid, [same, ~same]


def test_row_columns_lists_true_columns_in_order():
    mask = torch.tensor(
        [[True, False, True, True], [False, False, False, False], [False, True, False, False]]
    )
    cols, valid = row_columns(mask)
    assert cols.tolist() == [[0, 2, 3], [0, 0, 0], [1, 0, 0]]
    assert valid.tolist() == [[True, True, True], [False, False, False], [True, False, False]]


@pytest.mark.parametrize("clamped", [False, True])
@pytest.mark.parametrize("temperature", [0.01, 0.3])
def test_matches_dense_reference(clamped, temperature):
    sim, cols, valid, masks = random_case(12, seed=1)
    a = sim.clone().requires_grad_(True)
    b = sim.clone().requires_grad_(True)
    ours = soft_rank_counts(a, cols, valid, masks, temperature, clamped)
    ref = dense_reference(b, cols, valid, masks, temperature, clamped)
    torch.testing.assert_close(ours, ref)
    weights = torch.randn_like(ref)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("clamped", [False, True])
def test_gradcheck(clamped):
    sim, cols, valid, masks = random_case(6, 7, seed=2)
    sim.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s: soft_rank_counts(s, cols, valid, masks, 0.5, clamped), (sim,)
    )


@pytest.mark.parametrize("clamped", [False, True])
def test_chunks_give_the_same_values_and_gradients(clamped, tiny_budget):
    sim, cols, valid, masks = random_case(15, seed=3)
    weights = torch.randn(15, cols.shape[1], 2, dtype=torch.float64)
    results = []
    for budget in [512, 2**30]:
        chunking.set_memory_budget(budget)
        s = sim.clone().requires_grad_(True)
        out = soft_rank_counts(s, cols, valid, masks, 0.05, clamped)
        (out * weights).sum().backward()
        results.append((out.detach(), s.grad))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)


def test_no_columns():
    sim = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    cols, valid = row_columns(torch.zeros(4, 4, dtype=torch.bool))
    out = soft_rank_counts(sim, cols, valid, [torch.ones(4, 4, dtype=torch.bool)], 0.1)
    assert out.shape == (4, 0, 1)
    out.sum().backward()
    assert torch.equal(sim.grad, torch.zeros(4, 4, dtype=torch.float64))


def test_rejections_name_the_loss():
    x, y = torch.randn(3, 2), torch.arange(3)
    reject_ref_emb(x, y, x, y, "L")
    with pytest.raises(ValueError, match="L does not support ref_emb"):
        reject_ref_emb(x, y, x.clone(), y, "L")
    reject_indices_tuple(None, "L")
    with pytest.raises(ValueError, match="L does not support an indices_tuple"):
        reject_indices_tuple((y, y, y), "L")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_similarities_are_counted_in_float32(dtype):
    """A distance under autocast gives half-precision similarities even from float32
    embeddings: the counts are those of the rounded similarities (they were all 0 in fp16)."""
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 8, generator=g).to(dtype)
    cols = torch.randint(0, 8, (6, 3), generator=g)
    valid = torch.ones(6, 3, dtype=torch.bool)
    masks = [torch.rand(6, 8, generator=g) > 0.5]
    counts = soft_rank_counts(sim, cols, valid, masks, 0.5)
    expected = soft_rank_counts(sim.float(), cols, valid, masks, 0.5)
    torch.testing.assert_close(counts.float(), expected)
