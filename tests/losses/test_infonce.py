import math

import pytest
import torch
import torch.nn.functional as F

from metricssl.losses.infonce import info_nce, info_nce_terms, two_view_info_nce


def reference(
    q,
    keys,
    positives,
    temperature,
    extra=None,
    batch_negatives=True,
    self_keys=False,
    decoupled=False,
    weight=None,
):
    """InfoNCE written out query by query, in float64 with Python sums."""
    losses = []
    for i in range(q.shape[0]):
        pos = float(q[i] @ keys[positives[i]]) / temperature
        negatives = []
        if batch_negatives:
            for j in range(keys.shape[0]):
                if j == positives[i] or (self_keys and j == i):
                    continue
                negatives.append(float(q[i] @ keys[j]) / temperature)
        if extra is not None:
            negatives += [float(q[i] @ e) / temperature for e in extra]
        denominator = sum(math.exp(s) for s in negatives)
        if not decoupled:
            denominator += math.exp(pos)
        w = 1.0 if weight is None else float(weight[i])
        losses.append(-w * pos + math.log(denominator))
    return torch.tensor(losses, dtype=torch.float64)


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=1)


def test_queries_as_their_own_keys_match_the_formula():
    z = unit(10, 6)
    positives = torch.cat([torch.arange(5) + 5, torch.arange(5)])
    got = info_nce(z, None, positives, temperature=0.3, reduction="none")
    want = reference(z, z, positives.tolist(), 0.3, self_keys=True)
    torch.testing.assert_close(got, want)
    assert got.dtype == torch.float64


def test_aligned_keys_with_a_queue_match_the_formula():
    q, k, queue = unit(6, 5, seed=1), unit(6, 5, seed=2), unit(9, 5, seed=3)
    got = info_nce(q, k, temperature=0.2, extra_keys=queue, reduction="none")
    want = reference(q, k, list(range(6)), 0.2, extra=queue)
    torch.testing.assert_close(got, want)


def test_queue_only_negatives_match_the_formula_and_a_cross_entropy():
    q, k, queue = unit(6, 5, seed=1), unit(6, 5, seed=2), unit(9, 5, seed=3)
    got = info_nce(q, k, temperature=0.2, extra_keys=queue, batch_negatives=False)
    want = reference(q, k, list(range(6)), 0.2, extra=queue, batch_negatives=False).mean()
    torch.testing.assert_close(got, want)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
    torch.testing.assert_close(got, F.cross_entropy(logits, torch.zeros(6, dtype=torch.long)))


def test_normalize_gives_cosine_similarities():
    q, k = torch.randn(5, 4, dtype=torch.float64) * 3, torch.randn(5, 4, dtype=torch.float64)
    got = info_nce(q, k, temperature=0.5, normalize=True, reduction="none")
    want = reference(F.normalize(q, dim=1), F.normalize(k, dim=1), list(range(5)), 0.5)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("decoupled", [False, True])
def test_decoupled_and_weighted_match_the_formula(decoupled):
    z = unit(8, 6, seed=4)
    positives = torch.cat([torch.arange(4) + 4, torch.arange(4)])
    weight = torch.linspace(0.5, 1.5, 8, dtype=torch.float64)
    for w in (None, weight):
        got = info_nce(
            z,
            None,
            positives,
            temperature=0.1,
            decoupled=decoupled,
            positive_weight=w,
            reduction="none",
        )
        want = reference(
            z, z, positives.tolist(), 0.1, self_keys=True, decoupled=decoupled, weight=w
        )
        torch.testing.assert_close(got, want)


def test_decoupled_leaves_the_positive_out_of_the_denominator():
    q, k = unit(4, 3, seed=5), unit(4, 3, seed=6)
    coupled = info_nce(q, k, temperature=0.5, reduction="none")
    decoupled = info_nce(q, k, temperature=0.5, decoupled=True, reduction="none")
    pos = (q * k).sum(1) / 0.5
    # coupled = log(e^pos + N) - pos and decoupled = log(N) - pos, N the negatives' sum.
    torch.testing.assert_close(coupled, torch.log(torch.exp(decoupled + pos) + pos.exp()) - pos)
    assert bool((decoupled < coupled).all())


@pytest.mark.parametrize("self_keys", [False, True])
def test_chunked_equals_unchunked_values_and_gradients(self_keys):
    def run(chunk_size):
        q = unit(11, 7, seed=7).requires_grad_()
        k = None if self_keys else unit(11, 7, seed=8).requires_grad_()
        queue = unit(13, 7, seed=9).requires_grad_()
        positives = (torch.arange(11) + 3) % 11
        loss = info_nce(q, k, positives, temperature=0.2, extra_keys=queue, chunk_size=chunk_size)
        loss.backward()
        return [loss] + [t.grad for t in (q, k, queue) if t is not None]

    whole, chunked = run(None), run(3)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)


def test_the_memory_budget_splits_the_queries_into_blocks(monkeypatch):
    from metricssl.core import chunking

    q, queue = unit(6, 4, seed=1).requires_grad_(), unit(50, 4, seed=2)
    whole = info_nce(q, q.detach(), temperature=0.3, extra_keys=queue)
    calls = []
    monkeypatch.setattr(chunking, "_MEMORY_BUDGET_BYTES", 2 * 56 * 12)
    import metricssl.losses.infonce as module

    real = module._block_negative_lse
    monkeypatch.setattr(
        module, "_block_negative_lse", lambda *a: calls.append(a[0].shape[0]) or real(*a)
    )
    blocks = info_nce(q, q.detach(), temperature=0.3, extra_keys=queue)
    torch.testing.assert_close(whole, blocks)
    assert calls[:3] == [2, 2, 2]


def test_gradients_match_autograd_of_the_formula():
    q = unit(6, 4, seed=10).requires_grad_()
    positives = torch.cat([torch.arange(3) + 3, torch.arange(3)])
    info_nce(q, None, positives, temperature=0.4).backward()
    got = q.grad.clone()

    q2 = q.detach().clone().requires_grad_()
    logits = q2 @ q2.T / 0.4
    logits = logits.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    F.cross_entropy(logits, positives).backward()
    torch.testing.assert_close(got, q2.grad)


def test_no_negatives_is_a_zero_loss_with_a_zero_gradient():
    q, k = unit(3, 4, seed=1).requires_grad_(), unit(3, 4, seed=2)
    loss = info_nce(q, k, temperature=0.1, extra_keys=k[:0], batch_negatives=False)
    loss.backward()
    assert loss.item() == 0
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_large_logits_stay_finite():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # temperature 1e-3: logits of +-1000, beyond float32's exp.
    losses = info_nce(q, k, temperature=1e-3, reduction="none")
    assert torch.isfinite(losses).all()
    torch.testing.assert_close(losses, torch.tensor([0.0, 2000.0]))


def test_half_precision_and_autocast_run_in_float32():
    q, k = unit(6, 8, seed=1).float(), unit(6, 8, seed=2).float()
    want = info_nce(q, k, temperature=0.2)
    got = info_nce(q.bfloat16(), k.bfloat16(), temperature=0.2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.05, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = info_nce(q, k, temperature=0.2)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, want)


def test_reductions():
    q, k = unit(5, 3, seed=1), unit(5, 3, seed=2)
    each = info_nce(q, k, temperature=0.5, reduction="none")
    assert each.shape == (5,)
    torch.testing.assert_close(info_nce(q, k, temperature=0.5, reduction="sum"), each.sum())
    torch.testing.assert_close(info_nce(q, k, temperature=0.5), each.mean())


def test_terms_are_stable_and_match_the_definition():
    pos, neg = torch.tensor([2.0, 100.0, -100.0]), torch.tensor([0.0, 0.0, 0.0])
    got = info_nce_terms(pos, neg)
    want = torch.log(pos.double().exp() + neg.double().exp()) - pos.double()
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(info_nce_terms(pos, neg, decoupled=True), neg - pos)
    w = torch.tensor([0.5, 1.0, 2.0])
    torch.testing.assert_close(
        info_nce_terms(pos, neg, positive_weight=w).double(),
        torch.log(pos.double().exp() + 1) - w.double() * pos.double(),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"queries": torch.randn(4)}, "queries"),
        ({"queries": torch.arange(8).view(4, 2)}, "queries"),
        ({"keys": torch.randn(4, 3)}, "keys has width"),
        ({"keys": torch.randn(5, 2)}, "same number of rows"),
        ({"keys": None}, "positive_index is required"),
        ({"positive_index": torch.zeros(3, dtype=torch.long)}, "positive_index"),
        ({"positive_index": torch.zeros(4)}, "positive_index"),
        ({"positive_index": torch.tensor([0, 1, 2, 4])}, r"outside the 4 keys"),
        ({"positive_index": torch.tensor([0, -1, 2, 3])}, r"positive_index has rows in \[-1, 3\]"),
        ({"extra_keys": torch.randn(4, 3)}, "extra_keys has width"),
        ({"temperature": 0}, "temperature"),
        ({"positive_weight": torch.ones(3)}, "positive_weight"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"reduction": "max"}, "reduction"),
        ({"gather": True, "batch_negatives": False}, "gather"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, match):
    args = {"queries": torch.randn(4, 2), "keys": torch.randn(4, 2), "temperature": 0.1}
    args.update(kwargs)
    queries, keys = args.pop("queries"), args.pop("keys")
    with pytest.raises(ValueError, match=match):
        info_nce(queries, keys, **args)


def test_a_non_bool_flag_is_a_type_error():
    with pytest.raises(TypeError, match="decoupled"):
        info_nce(torch.randn(4, 2), torch.randn(4, 2), temperature=0.1, decoupled=1)


def _gathered_worker(rank, out_dir, self_keys):
    from tests.gloo import WORLD

    q, k, queue = unit(8, 5, seed=11), unit(8, 5, seed=12), unit(6, 5, seed=13)
    half = slice(rank * 4, (rank + 1) * 4)
    q, k = q[half].clone().requires_grad_(), k[half].clone().requires_grad_()
    positives = (torch.arange(4) + 1) % 4
    keys = None if self_keys else k
    loss = info_nce(q, keys, positives, temperature=0.3, extra_keys=queue, gather=True)
    loss.backward()
    # gather_with_grad sums every rank's gradient of its own loss; DDP divides by WORLD.
    grads = [q.grad / WORLD] + ([] if self_keys else [k.grad / WORLD])
    torch.save({"loss": loss.detach(), "grads": grads}, out_dir / f"rank{rank}.pt")


@pytest.mark.parametrize("self_keys", [False, True])
def test_gathered_keys_on_two_ranks_match_one_process(tmp_path, self_keys):
    from tests.gloo import WORLD, run_ranks

    run_ranks(_gathered_worker, tmp_path, tmp_path, self_keys)
    q = unit(8, 5, seed=11).requires_grad_()
    k = unit(8, 5, seed=12).requires_grad_()
    queue = unit(6, 5, seed=13)
    # Rank r's positives are its own rows, shifted by r * 4 in the global batch.
    positives = torch.cat([(torch.arange(4) + 1) % 4 + 4 * r for r in range(WORLD)])
    loss = info_nce(q, None if self_keys else k, positives, temperature=0.3, extra_keys=queue)
    loss.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, loss.detach())
    torch.testing.assert_close(torch.cat([r["grads"][0] for r in ranks]), q.grad)
    if not self_keys:
        torch.testing.assert_close(torch.cat([r["grads"][1] for r in ranks]), k.grad)


def test_two_view_info_nce_is_the_simclr_call():
    z1, z2 = unit(5, 4, seed=14) * 2, unit(5, 4, seed=15)
    weight = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)
    got = two_view_info_nce(z1, z2, temperature=0.2, decoupled=True, positive_weight=weight)
    u, v = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    positives = torch.cat([torch.arange(5) + 5, torch.arange(5)])
    want = reference(
        torch.cat([u, v]),
        torch.cat([u, v]),
        positives.tolist(),
        0.2,
        self_keys=True,
        decoupled=True,
        weight=torch.cat([weight, weight]),
    ).mean()
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="same shape"):
        two_view_info_nce(z1, z2[:4], temperature=0.2)
