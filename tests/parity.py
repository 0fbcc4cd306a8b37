"""Run a metricssl module and its PML counterpart on the same inputs; compare values and grads."""

from __future__ import annotations

import torch

# float64 gets tight tolerances; float32 the 1e-4 relative; half types are compared
# against PML run in float32 (PML itself is not accurate in half precision).
TOLERANCES = {
    torch.float64: dict(rtol=1e-7, atol=1e-9),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
}


def random_embeddings(n, d, dtype=torch.float32, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    return x.requires_grad_(requires_grad)


def random_labels(n, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, num_classes, (n,), generator=g)


# Label layouts every parity test sweeps: one class (no negatives), all singletons (no
# positives), few classes, and many small classes.
LAYOUTS = ["one_class", "singletons", "three", "many"]


def make_labels(n, layout, seed=0):
    if layout == "one_class":
        return torch.zeros(n, dtype=torch.long)
    if layout == "singletons":
        return torch.arange(n)
    if layout == "three":
        return random_labels(n, 3, seed)
    return random_labels(n, max(2, n // 3), seed)


def _leaf(x, dtype=None):
    if x is None:
        return None
    y = x.detach().clone()
    if dtype is not None:
        y = y.to(dtype)
    return y.requires_grad_(True)


def loss_parity(
    ours,
    theirs,
    embeddings,
    labels=None,
    indices_tuple=None,
    ref_emb=None,
    ref_labels=None,
    reference_dtype=None,
    seed=None,
    **tol,
):
    """Assert ours(...) == theirs(...) in value and in gradient w.r.t. embeddings and ref_emb.

    ``reference_dtype`` runs PML in another dtype (float32 for half inputs). ``seed`` reseeds
    torch before each call, for losses that sample. Returns (our value, PML value).
    """
    dtype = embeddings.dtype
    tol = {**TOLERANCES[dtype], **tol}
    e1, r1 = _leaf(embeddings), _leaf(ref_emb)
    e2, r2 = _leaf(embeddings, reference_dtype), _leaf(ref_emb, reference_dtype)
    if seed is not None:
        torch.manual_seed(seed)
    v1 = ours(e1, labels, indices_tuple, r1, ref_labels)
    if seed is not None:
        torch.manual_seed(seed)
    v2 = theirs(e2, labels, indices_tuple, r2, ref_labels)
    torch.testing.assert_close(v1.detach().double(), v2.detach().double(), **tol)
    leaves = [(e1, e2)] + ([(r1, r2)] if ref_emb is not None else [])
    if v1.requires_grad or v2.requires_grad:
        grads1 = torch.autograd.grad(v1, [a for a, _ in leaves], allow_unused=True)
        grads2 = torch.autograd.grad(v2, [b for _, b in leaves], allow_unused=True)
        for g1, g2, (a, _) in zip(grads1, grads2, leaves):
            g1 = torch.zeros_like(a) if g1 is None else g1
            g2 = torch.zeros_like(a) if g2 is None else g2
            torch.testing.assert_close(g1.double(), g2.double(), **tol)
    return v1, v2


def _sorted_keys(columns) -> torch.Tensor:
    """Each tuple as one int64 key (20 bits per index), sorted: equal multisets, equal keys."""
    key = torch.zeros(len(columns[0]), dtype=torch.long)
    for col in columns:
        key = key * (1 << 20) + col.long().cpu()
    return torch.sort(key).values


def same_indices(ours, theirs):
    """Assert two index tuples hold the same pairs/triplets as multisets (any order).

    Pair tuples (a1, p, a2, n) are compared half by half: positives and negatives.
    """
    assert len(ours) == len(theirs)
    halves = (
        [(ours[:2], theirs[:2]), (ours[2:], theirs[2:])] if len(ours) == 4 else [(ours, theirs)]
    )
    for mine, expected, what in [(m, e, w) for (m, e), w in zip(halves, ["first", "second"])]:
        assert len(mine[0]) == len(expected[0]), f"{what} half: different numbers of tuples"
        assert torch.equal(_sorted_keys(mine), _sorted_keys(expected)), f"{what} half differs"


def pooling_distance(base):
    """A user's distance (subclass of ``base``) for (batch, views, dim) embeddings: its own
    ``check_shapes`` accepts 3-D input, which it averages over the views."""

    class Pooling(base):
        def check_shapes(self, query_emb, ref_emb):
            if query_emb.ndim not in (2, 3):
                raise ValueError("2-D or 3-D embeddings")

        def forward(self, query_emb, ref_emb=None):
            if query_emb.ndim == 3:
                query_emb = query_emb.mean(1)
                ref_emb = None if ref_emb is None else ref_emb.mean(1)
            return super().forward(query_emb, ref_emb)

    return Pooling()
