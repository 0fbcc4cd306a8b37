"""Reproducible stratified train/test splits."""

from __future__ import annotations

import numpy as np
import torch

from ..core.validation import check_number


def stratified_split(
    labels, test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a stratified train/test split: each class keeps its share in both parts.

    Every class with at least two members puts ``round(test_fraction * count)`` of them
    (at least one, at most ``count - 1``) in the test part; a class seen once stays in train.
    The same ``labels``, ``test_fraction`` and ``seed`` always give the same split.

    Args:
        labels: (N,) integer labels, tensor or array.
        test_fraction: share of each class that goes to the test part, in (0, 1).
        seed: seed of the shuffle inside each class.

    Returns:
        ``(train_indices, test_indices)``: sorted int64 tensors that partition range(N).

    Example:
        >>> import torch
        >>> from metricssl.data.splits import stratified_split
        >>> train, test = stratified_split(torch.arange(100) % 4, test_fraction=0.25)
        >>> len(train), len(test)
        (76, 24)
    """
    check_number(
        "test_fraction", test_fraction, low=0, high=1, low_inclusive=False, high_inclusive=False
    )
    check_number("seed", seed, low=0, integer=True)
    y = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1D, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {y.dtype}")
    rng = np.random.default_rng(seed)
    test = []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        if len(members) < 2:
            continue
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test.append(rng.permutation(members)[:n_test])
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(y)), test, assume_unique=True)
    return torch.from_numpy(train.astype(np.int64)), torch.from_numpy(test.astype(np.int64))
