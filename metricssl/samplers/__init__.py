"""Samplers for metric learning (PML-compatible)."""

from .m_per_class_sampler import MPerClassSampler

__all__ = ["MPerClassSampler"]
