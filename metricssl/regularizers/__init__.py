"""Regularizers for embeddings and loss weights (PML-compatible)."""

from .base_regularizer import BaseRegularizer
from .lp_regularizer import LpRegularizer

__all__ = ["BaseRegularizer", "LpRegularizer"]
