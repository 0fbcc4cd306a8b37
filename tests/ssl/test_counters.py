import copy

import pytest
import torch
from torch import nn

from metricssl.ssl.counters import HostCounters
from metricssl.ssl.method import Batch
from metricssl.ssl.moco import MoCo
from metricssl.ssl.swav import SwAV
from tests.host_reads import count_host_reads


class Ring(HostCounters):
    def __init__(self):
        super().__init__()
        self.register_counter("ptr")
        self.register_counter("filled", 5)


def test_counters_are_buffers_with_host_copies(monkeypatch):
    ring = Ring()
    assert ring.counter("ptr") == 0 and ring.counter("filled") == 5
    assert set(ring.state_dict()) == {"ptr", "filled"}
    with count_host_reads(monkeypatch) as reads:
        ring.set_counter("ptr", 7)
        assert ring.counter("ptr") == 7
    assert sum(reads.values()) == 0
    assert ring.ptr.dtype == torch.int64 and int(ring.ptr) == 7


def test_loading_a_state_dict_reads_the_loaded_buffers_once(monkeypatch):
    a, b = Ring(), Ring()
    a.set_counter("ptr", 3)
    a.set_counter("filled", 9)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    with count_host_reads(monkeypatch) as reads:
        assert b.counter("ptr") == 3 and b.counter("filled") == 9
        assert b.counter("ptr") == 3
    assert sum(reads.values()) == 2  # one per counter, after the load


def moco():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
    return MoCo(backbone, nn.Linear(16, 8), queue_size=12, symmetric=True)


def swav():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    head, protos = nn.Linear(16, 8), nn.Linear(8, 6, bias=False)
    return SwAV(backbone, head, protos, queue_length=10, freeze_prototypes_iters=2)


def views(method, seed):
    g = torch.Generator().manual_seed(seed)
    crops = [torch.rand(4, 1, 8, 8, generator=g) for _ in range(2)]
    if isinstance(method, SwAV):
        crops += [torch.rand(4, 1, 4, 4, generator=g) for _ in range(2)]
    return crops


def step(method, seed, total=10):
    out = method.training_step(Batch(views(method, seed)))
    out["loss"].backward()
    method.on_step_end(seed + 1, total)
    return out


@pytest.mark.parametrize("build", [moco, swav])
def test_a_step_reads_nothing_back_from_the_device(build, monkeypatch):
    """The queue's position and fill level, and SwAV's step count, steer the step from their
    host copies: no item()/int()/bool() of a tensor (each a synchronisation on CUDA), on the
    first step, with a queue filling up, or with a full one that wraps around."""
    method = build()
    with count_host_reads(monkeypatch) as reads:
        for s in range(5):
            step(method, s)
    assert sum(reads.values()) == 0, reads
    assert method.counter("queue_filled") == int(method.queue_filled) > 0


@pytest.mark.parametrize("build", [moco, swav])
def test_resumed_counters_continue_exactly(build, monkeypatch):
    a = build()
    for s in range(2):
        step(a, s)
    b = build()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    with count_host_reads(monkeypatch) as reads:
        outs_b = [step(b, s) for s in range(2, 5)]
    names = [n for n in ("queue_ptr", "queue_filled", "steps_done") if hasattr(b, n)]
    assert sum(reads.values()) == len(names)  # each loaded counter read once
    outs_a = [step(a, s) for s in range(2, 5)]
    for x, y in zip(outs_a, outs_b):
        assert torch.equal(x["loss"], y["loss"])
    assert torch.equal(a.queue, b.queue)
    for name in names:
        assert a.counter(name) == b.counter(name) == int(getattr(b, name))
