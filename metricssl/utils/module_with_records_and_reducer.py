"""Modules that own a reducer and/or a distance, with PML's defaults."""

from __future__ import annotations

import copy

from ..distances import BaseDistance, LpDistance
from ..reducers import BaseReducer, DoNothingReducer, MeanReducer, MultipleReducers
from .records import ModuleWithRecords


class ModuleWithRecordsAndReducer(ModuleWithRecords):
    """Holds ``self.reducer``: one reducer, or a MultipleReducers when there are sub-losses."""

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


class ModuleWithRecordsAndDistance(ModuleWithRecords):
    """Holds ``self.distance`` (LpDistance(p=2) by default)."""

    def __init__(self, distance: BaseDistance | None = None, **kwargs):
        super().__init__(**kwargs)
        if distance is not None and not isinstance(distance, BaseDistance):
            raise TypeError(f"distance must be a BaseDistance, got {type(distance).__name__}")
        self.distance = self.get_default_distance() if distance is None else distance

    def get_default_distance(self) -> BaseDistance:
        return LpDistance(p=2)


class ModuleWithRecordsReducerAndDistance(
    ModuleWithRecordsAndReducer, ModuleWithRecordsAndDistance
):
    pass
