"""Shared machinery: PML-compatible helpers, validation, chunking, pair masks."""

from . import common_functions, loss_and_miner_utils
from .chunking import get_memory_budget, set_memory_budget

__all__ = ["common_functions", "loss_and_miner_utils", "get_memory_budget", "set_memory_budget"]
