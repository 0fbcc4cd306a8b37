"""ring_enqueue: the one ring buffer of MoCo, NNCLR and SwAV."""

import torch

from metricssl.ssl.counters import HostCounters
from metricssl.ssl.queue import ring_enqueue


def _owner() -> HostCounters:
    owner = HostCounters()
    owner.register_counter("queue_ptr")
    owner.register_counter("queue_filled")
    return owner


def test_rows_wrap_around_and_the_fill_level_stops_at_the_length():
    owner, queue = _owner(), torch.zeros(5, 2)
    for start in (0, 3, 6):
        ring_enqueue(owner, queue, torch.arange(start, start + 3.0).repeat(2, 1).T)
    # 9 rows through 5 slots: rows 5..8 overwrote slots 0..3; slot 4 still holds row 4.
    assert queue[:, 0].tolist() == [5.0, 6.0, 7.0, 8.0, 4.0]
    assert (owner.counter("queue_ptr"), owner.counter("queue_filled")) == (4, 5)
    assert (int(owner.queue_ptr), int(owner.queue_filled)) == (4, 5)


def test_more_rows_than_the_queue_keeps_the_last_ones_along_dim():
    owner, queue = _owner(), torch.zeros(2, 3, 1, dtype=torch.float64)
    ring_enqueue(owner, queue, torch.arange(10.0).view(2, 5, 1), dim=1)
    assert queue.squeeze(2).tolist() == [[2.0, 3.0, 4.0], [7.0, 8.0, 9.0]]
    assert queue.dtype == torch.float64
    assert (owner.counter("queue_ptr"), owner.counter("queue_filled")) == (0, 3)
