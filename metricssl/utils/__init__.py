"""PML's import path ``pytorch_metric_learning.utils``: re-exports of the layers below
(mostly :mod:`metricssl.core`) and PML's own helpers. Nothing inside metricssl imports it.

Example:
    >>> from metricssl.utils import common_functions as c_f, get_memory_budget
    >>> get_memory_budget() // 2**20
    256
"""

from ..core.chunking import get_memory_budget, set_memory_budget
from . import common_functions, loss_and_miner_utils

__all__ = ["common_functions", "loss_and_miner_utils", "get_memory_budget", "set_memory_budget"]
