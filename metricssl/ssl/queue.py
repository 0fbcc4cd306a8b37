"""The ring buffer of past rows behind MoCo's negatives, NNCLR's support set and SwAV's queue."""

from __future__ import annotations

import torch

from .counters import HostCounters


@torch.no_grad()
def ring_enqueue(
    owner: HostCounters, queue: torch.Tensor, rows: torch.Tensor, dim: int = 0
) -> None:
    """Write ``rows`` (along ``dim``, in order) over the oldest entries of ``queue``.

    The write starts at ``owner``'s counter ``queue_ptr`` and wraps at the end of the queue;
    ``queue_ptr`` then points past the last row written, and ``queue_filled`` counts the valid
    entries (at most the queue's length). Of more rows than the queue holds, only the last
    ones are kept. The callers gather the rows of every process first (in rank order), so
    every process writes the same rows and the queues stay identical.

    Example:
        >>> import torch
        >>> from metricssl.ssl.counters import HostCounters
        >>> from metricssl.ssl.queue import ring_enqueue
        >>> owner = HostCounters()
        >>> owner.register_counter("queue_ptr")
        >>> owner.register_counter("queue_filled")
        >>> queue = torch.zeros(4)
        >>> ring_enqueue(owner, queue, torch.tensor([1.0, 2.0, 3.0]))
        >>> ring_enqueue(owner, queue, torch.tensor([4.0, 5.0]))
        >>> queue, owner.counter("queue_ptr"), owner.counter("queue_filled")
        (tensor([5., 2., 3., 4.]), 1, 4)
    """
    size = queue.shape[dim]
    n = min(size, rows.shape[dim])
    rows = rows.narrow(dim, rows.shape[dim] - n, n)
    ptr = owner.counter("queue_ptr")
    positions = (torch.arange(n, device=rows.device) + ptr) % size
    queue.index_copy_(dim, positions, rows.to(queue.dtype))
    owner.set_counter("queue_ptr", (ptr + n) % size)
    owner.set_counter("queue_filled", min(size, owner.counter("queue_filled") + n))
