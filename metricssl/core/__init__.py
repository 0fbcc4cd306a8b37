"""The ground floor: what every layer of metricssl uses, importing nothing else of metricssl.

- :mod:`~metricssl.core.validation` — argument checks and their errors (``ArgumentError``);
- :mod:`~metricssl.core.chunking` — the memory budget and the row chunks that respect it;
- :mod:`~metricssl.core.atomic` — atomic file writes;
- :mod:`~metricssl.core.pair_masks` — positive/negative pair masks from labels;
- :mod:`~metricssl.core.records` — ``ModuleWithRecords`` and recorded statistics;
- :mod:`~metricssl.core.loss_and_miner_utils` — the indices tuples of losses and miners;
- :mod:`~metricssl.core.distributed` — rank, world size, all-gathers;
- :mod:`~metricssl.core.common` — PML's globals (``NUMPY_RANDOM``, ``COLLECT_STATS``, the
  "PML" logger; their one owner) and the small tensor helpers every layer calls.

``metricssl.utils`` is PML's import path: it re-exports these with PML's helpers.

Example:
    >>> from metricssl.core.chunking import row_chunks
    >>> list(row_chunks(5, bytes_per_row=1, budget=2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
"""
