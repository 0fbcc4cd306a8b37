"""The base of modules that own a distance (miners, and through
:class:`~metricssl.reducers.module_with_reducer.ModuleWithRecordsReducerAndDistance` losses and
regularizers), with PML's default.

Example:
    >>> from metricssl.distances.module_with_distance import ModuleWithRecordsAndDistance
    >>> ModuleWithRecordsAndDistance().distance
    LpDistance()
"""

from __future__ import annotations

from ..core.records import ModuleWithRecords
from .base_distance import BaseDistance
from .lp_distance import LpDistance


class ModuleWithRecordsAndDistance(ModuleWithRecords):
    """Holds ``self.distance`` (LpDistance(p=2) by default).

    Args:
        distance: a :class:`BaseDistance`, or None for :meth:`get_default_distance`.
        collect_stats: as :class:`~metricssl.core.records.ModuleWithRecords`.
    """

    def __init__(self, distance: BaseDistance | None = None, **kwargs):
        super().__init__(**kwargs)
        if distance is not None and not isinstance(distance, BaseDistance):
            raise TypeError(f"distance must be a BaseDistance, got {type(distance).__name__}")
        self.distance = self.get_default_distance() if distance is None else distance

    def get_default_distance(self) -> BaseDistance:
        return LpDistance(p=2)
