"""The import path of :func:`~metricssl.eval.linear.linear_probe`, which lives with the rest of
the linear evaluation in :mod:`metricssl.eval.linear`."""

from .linear import linear_probe

__all__ = ["linear_probe"]
