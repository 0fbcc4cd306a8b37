from pytorch_metric_learning.utils.module_with_records import ModuleWithRecords as PMLModule

from metricssl.core.records import ModuleWithRecords as Base
from metricssl.utils import common_functions as c_f
from metricssl.utils.module_with_records import ModuleWithRecords


def test_is_the_records_base_and_behaves_like_pml():
    assert ModuleWithRecords is Base
    for collect_stats in (False, True):
        ours, theirs = ModuleWithRecords(collect_stats), PMLModule(collect_stats)
        for m in (ours, theirs):
            m.add_to_recordable_attributes(name="margin")
            m.add_to_recordable_attributes(list_of_names=["pos", "neg"], is_stat=True)
            if collect_stats:
                m.pos = 3
            m.reset_stats()
        for attr in ("_record_these", "_record_these_stats"):
            assert getattr(ours, attr, None) == getattr(theirs, attr, None)
        assert getattr(ours, "pos", None) == getattr(theirs, "pos", None)


def test_collect_stats_defaults_to_the_global_switch(monkeypatch):
    monkeypatch.setattr(c_f, "COLLECT_STATS", True)
    assert ModuleWithRecords().collect_stats is True
    monkeypatch.setattr(c_f, "COLLECT_STATS", False)
    assert ModuleWithRecords().collect_stats is False
