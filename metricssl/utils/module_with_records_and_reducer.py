"""PML's import path ``pytorch_metric_learning.utils.module_with_records_and_reducer``.

The classes live with the layer they need: :class:`ModuleWithRecordsAndDistance` in
:mod:`metricssl.distances.module_with_distance`, the reducer ones in
:mod:`metricssl.reducers.module_with_reducer`.

Example:
    >>> from metricssl.utils.module_with_records_and_reducer import (
    ...     ModuleWithRecordsReducerAndDistance,
    ... )
    >>> m = ModuleWithRecordsReducerAndDistance()
    >>> type(m.reducer).__name__, type(m.distance).__name__
    ('MeanReducer', 'LpDistance')
"""

from ..distances.module_with_distance import ModuleWithRecordsAndDistance
from ..reducers.module_with_reducer import (
    ModuleWithRecordsAndReducer,
    ModuleWithRecordsReducerAndDistance,
)

__all__ = [
    "ModuleWithRecordsAndDistance",
    "ModuleWithRecordsAndReducer",
    "ModuleWithRecordsReducerAndDistance",
]
