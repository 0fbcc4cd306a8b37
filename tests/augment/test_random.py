import torch

from metricssl.augment import random as rnd

CPU = torch.device("cpu")


def test_coin_extremes():
    assert not rnd.coin(1000, 0.0, CPU).any()
    assert rnd.coin(1000, 1.0, CPU).all()


def test_coin_frequency():
    g = torch.Generator().manual_seed(0)
    assert abs(rnd.coin(20000, 0.3, CPU, g).float().mean().item() - 0.3) < 0.02


def test_seeded_draws_repeat_and_differ():
    a = rnd.uniform(50, -1.0, 2.0, CPU, torch.Generator().manual_seed(3))
    b = rnd.uniform(50, -1.0, 2.0, CPU, torch.Generator().manual_seed(3))
    c = rnd.uniform(50, -1.0, 2.0, CPU, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= -1.0 and a.max() < 2.0


def test_global_seed_without_generator():
    torch.manual_seed(7)
    a = rnd.rand(10, CPU)
    torch.manual_seed(7)
    assert torch.equal(a, rnd.rand(10, CPU))


def test_log_uniform_range():
    r = rnd.log_uniform((100, 10), 0.75, 4 / 3, CPU, torch.Generator().manual_seed(0))
    assert r.shape == (100, 10)
    assert r.min() >= 0.75 - 1e-6 and r.max() <= 4 / 3 + 1e-6


def test_permutations_are_permutations():
    p = rnd.permutations(200, 4, CPU, torch.Generator().manual_seed(0))
    assert p.dtype == torch.int64
    assert torch.equal(p.sort(dim=1).values, torch.arange(4).expand(200, 4))
    assert len({tuple(row) for row in p.tolist()}) == 24  # all orders occur
