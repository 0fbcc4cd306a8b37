"""Per-row negative sums with multiplicity, the shared core of Lifted/Tuplet losses."""

import torch

from metricssl.losses.anchor_negatives import anchor_logsumexp, pair_counts


def test_pair_counts_counts_every_copy():
    rows = torch.tensor([0, 0, 0, 2, 1])
    cols = torch.tensor([1, 1, 3, 0, 1])
    counts = pair_counts(rows, cols, (3, 4), torch.float64)
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[0, 1], expected[0, 3], expected[2, 0], expected[1, 1] = 2, 1, 1, 1
    assert torch.equal(counts, expected)


def test_anchor_logsumexp_with_counts_and_masks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    counts = torch.tensor(
        [[0, 2, 0, 1, 0], [0, 0, 0, 0, 0], [3, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.float64
    )
    lse, has = anchor_logsumexp(x, counts)
    expected = torch.log((counts * x.exp()).sum(dim=1, keepdim=True))
    assert has.squeeze(1).tolist() == [True, False, True, True]
    torch.testing.assert_close(lse[has], expected[has])
    assert lse[1].item() == 0  # finite placeholder for a row without negatives
    mask_lse, mask_has = anchor_logsumexp(x, counts > 0)
    expected_mask = torch.log(((counts > 0) * x.exp()).sum(dim=1, keepdim=True))
    torch.testing.assert_close(mask_lse[mask_has], expected_mask[mask_has])
    assert torch.equal(mask_has, has)


def test_anchor_logsumexp_gradient_is_finite_for_empty_rows():
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[1, 0, 0, 2], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    lse, has = anchor_logsumexp(x, weight)
    torch.where(has, lse, torch.zeros_like(lse)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1], torch.zeros(4, dtype=torch.float64))
    # d lse / d x = softmax of x weighted by the counts.
    w0 = weight[0] * x.detach()[0].exp()
    torch.testing.assert_close(x.grad[0], w0 / w0.sum())
