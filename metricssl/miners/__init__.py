"""Miners: pick informative pairs and triplets (PML-compatible tuple formats)."""

from .base_miner import BaseMiner

__all__ = ["BaseMiner"]
