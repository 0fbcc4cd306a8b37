"""The bases of modules that own a reducer (and a distance: every loss and regularizer), with
PML's defaults.

They sit with the reducers; the distance half comes from
:mod:`metricssl.distances.module_with_distance` (reducers may import distances, which import
only core).

Example:
    >>> from metricssl.reducers.module_with_reducer import ModuleWithRecordsAndReducer
    >>> ModuleWithRecordsAndReducer().reducer
    MeanReducer()
"""

from __future__ import annotations

import copy

from ..core.records import ModuleWithRecords
from ..distances.module_with_distance import ModuleWithRecordsAndDistance
from .base_reducer import BaseReducer
from .do_nothing_reducer import DoNothingReducer
from .mean_reducer import MeanReducer
from .multiple_reducers import MultipleReducers


class ModuleWithRecordsAndReducer(ModuleWithRecords):
    """Holds ``self.reducer``: one reducer, or a MultipleReducers when there are sub-losses.

    Args:
        reducer: a :class:`BaseReducer`, copied for each sub-loss (None: MeanReducer).
        collect_stats: as :class:`~metricssl.core.records.ModuleWithRecords`.
    """

    def __init__(self, reducer: BaseReducer | None = None, **kwargs):
        super().__init__(**kwargs)
        if reducer is not None and not isinstance(reducer, BaseReducer):
            raise TypeError(f"reducer must be a BaseReducer, got {type(reducer).__name__}")
        self.set_reducer(reducer)

    def get_default_reducer(self) -> BaseReducer:
        return MeanReducer()

    def set_reducer(self, reducer):
        if isinstance(reducer, (MultipleReducers, DoNothingReducer)):
            self.reducer = reducer
            return

        def make():
            return self.get_default_reducer() if reducer is None else copy.deepcopy(reducer)

        names = self.sub_loss_names()
        self.reducer = make() if len(names) == 1 else MultipleReducers({k: make() for k in names})

    def sub_loss_names(self):
        return ["loss"]


class ModuleWithRecordsReducerAndDistance(
    ModuleWithRecordsAndReducer, ModuleWithRecordsAndDistance
):
    """A reducer (:class:`ModuleWithRecordsAndReducer`) and a distance
    (:class:`~metricssl.distances.module_with_distance.ModuleWithRecordsAndDistance`)."""
