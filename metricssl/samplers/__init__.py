"""Samplers for metric learning (PML-compatible)."""

from .fixed_set_of_triplets import FixedSetOfTriplets
from .hierarchical_sampler import HierarchicalSampler
from .m_per_class_sampler import MPerClassSampler
from .tuples_to_weights_sampler import TuplesToWeightsSampler

__all__ = [
    "FixedSetOfTriplets",
    "HierarchicalSampler",
    "MPerClassSampler",
    "TuplesToWeightsSampler",
]
