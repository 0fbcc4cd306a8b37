"""The memory budget and the row chunks that respect it."""

import pytest
import torch

from metricssl.core import chunking


@pytest.fixture
def restore_budget(monkeypatch):
    # The module's state itself: restoring through set_memory_budget would fix the budget
    # of every device.
    monkeypatch.setattr(chunking, "_MEMORY_BUDGET_BYTES", chunking._MEMORY_BUDGET_BYTES)


def test_default_budget_is_256_mib():
    assert chunking.get_memory_budget() == 256 * 2**20


def test_set_budget(restore_budget):
    chunking.set_memory_budget(1000)
    assert chunking.get_memory_budget() == 1000
    assert chunking.rows_per_chunk(100) == 10
    for bad in [0, -5, 1.5, True, "1", 2.0**30]:
        with pytest.raises(ValueError, match="num_bytes"):
            chunking.set_memory_budget(bad)
    assert chunking.get_memory_budget() == 1000


def test_rows_per_chunk():
    assert chunking.rows_per_chunk(10, budget=100) == 10
    assert chunking.rows_per_chunk(30, budget=100) == 3
    assert chunking.rows_per_chunk(1000, budget=100) == 1  # always at least one row
    assert chunking.rows_per_chunk(0, budget=100) == 100
    assert chunking.rows_per_chunk(2.5, budget=100) == 50


@pytest.mark.parametrize("n_rows", [0, 1, 7, 10, 23])
@pytest.mark.parametrize("bytes_per_row", [1, 3, 10, 1000])
def test_row_chunks_cover_every_row_once_within_budget(n_rows, bytes_per_row):
    chunks = list(chunking.row_chunks(n_rows, bytes_per_row, budget=30))
    covered = [i for c in chunks for i in range(c.start, c.stop)]
    assert covered == list(range(n_rows))
    for c in chunks:
        rows = c.stop - c.start
        assert rows >= 1
        assert rows * bytes_per_row <= 30 or rows == 1


def test_row_chunks_use_the_global_budget(restore_budget):
    chunking.set_memory_budget(64)
    assert [(c.start, c.stop) for c in chunking.row_chunks(5, 32)] == [(0, 2), (2, 4), (4, 5)]


def fake_cuda_memory(monkeypatch, free):
    calls = []

    def mem_get_info(device=None):
        calls.append(device)
        return free, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    return calls


@pytest.mark.parametrize(
    "free, expected",
    [
        (40 * 2**30, 4 * 2**30),  # capped
        (8 * 2**30, 2 * 2**30),  # a quarter of what is free
        (2**30, 2**28),
        (100 * 2**20, 25 * 2**20),  # below the CPU's 256 MiB when little is free
        (0, 1),
    ],
)
def test_cuda_budget_from_free_memory(free, expected, monkeypatch, restore_budget):
    calls = fake_cuda_memory(monkeypatch, free)
    chunking.set_memory_budget(None)
    assert chunking.budget_for("cuda:1") == expected
    assert chunking.budget_for(torch.device("cuda")) == expected
    assert [str(d) for d in calls] == ["cuda:1", "cuda"]


def test_cpu_budget_and_no_device_query(monkeypatch, restore_budget):
    calls = fake_cuda_memory(monkeypatch, 40 * 2**30)
    chunking.set_memory_budget(None)
    for device in [None, "cpu", torch.device("cpu"), "meta"]:
        assert chunking.budget_for(device) == 256 * 2**20
    assert chunking.rows_per_chunk(2**20) == 256
    assert calls == []


def test_rows_and_chunks_follow_the_device(monkeypatch, restore_budget):
    fake_cuda_memory(monkeypatch, 8 * 2**30)
    chunking.set_memory_budget(None)
    assert chunking.rows_per_chunk(2**20, device="cuda") == 2048
    assert chunking.rows_per_chunk(2**20, device="cpu") == 256
    assert chunking.rows_per_chunk(2**20, budget=2**21, device="cuda") == 2  # budget wins
    assert len(list(chunking.row_chunks(4096, 2**20, device="cuda"))) == 2
    assert len(list(chunking.row_chunks(4096, 2**20, device="cpu"))) == 16


def test_set_budget_overrides_every_device_until_reset(monkeypatch, restore_budget):
    calls = fake_cuda_memory(monkeypatch, 8 * 2**30)
    chunking.set_memory_budget(2**20)
    assert chunking.budget_for("cuda") == chunking.budget_for("cpu") == 2**20
    assert calls == []
    chunking.set_memory_budget(None)
    assert chunking.get_memory_budget() == 256 * 2**20
    assert chunking.budget_for("cuda") == 2 * 2**30
