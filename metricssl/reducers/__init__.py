"""Reducers: from a loss dictionary to one number (PML-compatible)."""

from .avg_non_zero_reducer import AvgNonZeroReducer
from .base_reducer import BaseReducer
from .class_weighted_reducer import ClassWeightedReducer
from .divisor_reducer import DivisorReducer
from .do_nothing_reducer import DoNothingReducer
from .fused import FusedReduction
from .mean_reducer import MeanReducer
from .multiple_reducers import MultipleReducers
from .per_anchor_reducer import PerAnchorReducer
from .sum_reducer import SumReducer
from .threshold_reducer import ThresholdReducer

__all__ = [
    "AvgNonZeroReducer",
    "BaseReducer",
    "ClassWeightedReducer",
    "DivisorReducer",
    "DoNothingReducer",
    "FusedReduction",
    "MeanReducer",
    "MultipleReducers",
    "PerAnchorReducer",
    "SumReducer",
    "ThresholdReducer",
]
