"""PML's recordable attributes: names a module reports, some only when ``collect_stats`` is on.

A record keeper reads ``_record_these`` (attributes that describe a module: margins, ...) and
``_record_these_stats`` (per-call statistics). :class:`ModuleWithRecords` is the base of every
distance, reducer, loss and miner; the functions are the same operations on any object, at
PML's ``common_functions`` names.

Example:
    >>> from metricssl.core.records import ModuleWithRecords
    >>> m = ModuleWithRecords(collect_stats=True)
    >>> m.add_to_recordable_attributes(name="num_pairs", is_stat=True)
    >>> m.num_pairs, m._record_these_stats
    (0, ['num_pairs'])
"""

from __future__ import annotations

import torch

from . import common


def add_to_recordable_attributes(input_obj, name=None, list_of_names=None, is_stat=False):
    """Register ``name`` / ``list_of_names`` as recorded attributes (statistics when
    ``is_stat``) of ``input_obj``, initialising missing ones to 0."""
    list_name = "_record_these_stats" if is_stat else "_record_these"
    if not hasattr(input_obj, list_name):
        setattr(input_obj, list_name, [])
    records = getattr(input_obj, list_name)
    if name is not None:
        if name not in records:
            records.append(name)
        if not hasattr(input_obj, name):
            setattr(input_obj, name, 0)
    if list_of_names is not None and common.is_list_or_tuple(list_of_names):
        for n in list_of_names:
            add_to_recordable_attributes(input_obj, name=n, is_stat=is_stat)


def reset_stats(input_obj) -> None:
    """Set every statistic of ``input_obj`` back to 0."""
    for name in getattr(input_obj, "_record_these_stats", []):
        setattr(input_obj, name, 0)


def list_of_recordable_attributes_list_names() -> list[str]:
    return ["_record_these", "_record_these_stats"]


class ModuleWithRecords(torch.nn.Module):
    """Base of every distance, reducer, loss and miner.

    Statistics (``is_stat=True``) are recorded only when ``collect_stats`` is True, or, when
    it is None, when ``common.COLLECT_STATS`` (PML's global switch) was True at construction.

    Args:
        collect_stats: record per-call statistics (None: the global switch).
    """

    def __init__(self, collect_stats: bool | None = None):
        super().__init__()
        self.collect_stats = common.COLLECT_STATS if collect_stats is None else bool(collect_stats)

    def add_to_recordable_attributes(self, name=None, list_of_names=None, is_stat=False):
        if is_stat and not self.collect_stats:
            return
        add_to_recordable_attributes(self, name=name, list_of_names=list_of_names, is_stat=is_stat)

    def reset_stats(self):
        reset_stats(self)
