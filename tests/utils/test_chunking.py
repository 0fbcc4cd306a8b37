"""The memory budget and the row chunks that respect it."""

import pytest

from metricssl.utils import chunking


@pytest.fixture
def restore_budget():
    before = chunking.get_memory_budget()
    yield
    chunking.set_memory_budget(before)


def test_default_budget_is_256_mib():
    assert chunking.get_memory_budget() == 256 * 2**20


def test_set_budget(restore_budget):
    chunking.set_memory_budget(1000)
    assert chunking.get_memory_budget() == 1000
    assert chunking.rows_per_chunk(100) == 10
    for bad in [0, -5, 1.5, True, "1"]:
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
