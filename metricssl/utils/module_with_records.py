"""PML's import path ``pytorch_metric_learning.utils.module_with_records``.

``ModuleWithRecords`` is :class:`metricssl.core.records.ModuleWithRecords` (re-exported):
the base of every distance, reducer, loss and miner, holding the names of the attributes a
record keeper reports (``_record_these``) and of per-call statistics kept only with
``collect_stats`` (``_record_these_stats``).

Example:
    >>> from metricssl.utils.module_with_records import ModuleWithRecords
    >>> m = ModuleWithRecords(collect_stats=True)
    >>> m.add_to_recordable_attributes(name="num_pairs", is_stat=True)
    >>> m.num_pairs, m._record_these_stats
    (0, ['num_pairs'])
"""

from ..core.records import ModuleWithRecords

__all__ = ["ModuleWithRecords"]
