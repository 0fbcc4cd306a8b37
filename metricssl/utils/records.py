"""PML's recordable attributes: names a module reports, some only when ``collect_stats`` is on."""

from __future__ import annotations

import torch

from . import common_functions as c_f


class ModuleWithRecords(torch.nn.Module):
    """Base of every distance, reducer, loss and miner.

    ``_record_these`` lists attributes that describe the module (margins, ...);
    ``_record_these_stats`` lists per-call statistics, kept only when ``collect_stats`` is
    True (or ``common_functions.COLLECT_STATS`` was True when the module was built).
    """

    def __init__(self, collect_stats: bool | None = None):
        super().__init__()
        self.collect_stats = c_f.COLLECT_STATS if collect_stats is None else bool(collect_stats)

    def add_to_recordable_attributes(self, name=None, list_of_names=None, is_stat=False):
        if is_stat and not self.collect_stats:
            return
        list_name = "_record_these_stats" if is_stat else "_record_these"
        if not hasattr(self, list_name):
            setattr(self, list_name, [])
        names = list(list_of_names or []) + ([name] if name is not None else [])
        records = getattr(self, list_name)
        for n in names:
            if n not in records:
                records.append(n)
            if not hasattr(self, n):
                setattr(self, n, 0)

    def reset_stats(self):
        for n in getattr(self, "_record_these_stats", []):
            setattr(self, n, 0)


def list_of_recordable_attributes_list_names():
    return ["_record_these", "_record_these_stats"]
