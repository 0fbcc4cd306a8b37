"""MPerClassSampler: batches made of m samples from each of several classes (PML's sampler)."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch.utils.data import Sampler

from ..utils import common_functions as c_f
from ..utils.validation import check_number


def _uniform(rng, size) -> np.ndarray:
    """Uniform [0, 1) draws from numpy's legacy module/RandomState or a new-style Generator."""
    draw = getattr(rng, "random_sample", None) or rng.random
    return draw(size)


def _random_subsets(rng, pool_sizes: np.ndarray, k: int) -> np.ndarray:
    """Row r: ``k`` distinct ints from ``[0, pool_sizes[r])``, uniform subset, random order.

    Floyd's algorithm, vectorised over rows: for ``j = n-k, ..., n-1`` draw ``t`` in
    ``[0, j]`` and keep ``t``, or ``j`` if ``t`` was already kept. That gives a uniformly
    random k-subset in O(k^2) per row, whatever the pool size; a final shuffle makes the
    order uniform too. Needs ``pool_sizes >= k``.
    """
    rows = len(pool_sizes)
    out = np.empty((rows, k), dtype=np.int64)
    for i in range(k):
        j = pool_sizes - k + i
        t = np.minimum((_uniform(rng, rows) * (j + 1)).astype(np.int64), j)
        if i:
            t = np.where((out[:, :i] == t[:, None]).any(axis=1), j, t)
        out[:, i] = t
    order = np.argsort(_uniform(rng, (rows, k)), axis=1)
    return np.take_along_axis(out, order, axis=1)


def _random_orderings(rng, rows: int, n: int, k: int) -> np.ndarray:
    """Row r: the first ``k`` entries of a uniformly random permutation of ``range(n)``."""
    if k * k > 8 * n:
        # Many of the n items are wanted: sorting random keys is cheaper than Floyd's O(k^2).
        # Blocks of rows bound the (rows x n) keys to a few MB.
        per_block = max(1, (1 << 20) // n)
        blocks = [
            np.argsort(_uniform(rng, (min(per_block, rows - r), n)), axis=1)[:, :k]
            for r in range(0, rows, per_block)
        ]
        return np.concatenate(blocks, axis=0)
    return _random_subsets(rng, np.full(rows, n, dtype=np.int64), k)


def _labels_to_numpy(labels) -> np.ndarray:
    if torch.is_tensor(labels):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.shape[0] == 0:
        raise ValueError("labels is empty")
    return labels


class MPerClassSampler(Sampler[int]):
    """At every iteration, ``m`` samples from each of ``batch_size // m`` random classes.

    PML's ``MPerClassSampler`` (after Wu et al.'s "Deep Metric Learning" sampler), with the
    same arguments, attributes and length. Feed it to a ``DataLoader`` with the same
    ``batch_size`` (and ``drop_last=True`` when the length is not a multiple of it): each
    batch then holds ``batch_size // m`` distinct classes, in contiguous runs of ``m``
    samples. A class with fewer than ``m`` samples is sampled with replacement; otherwise
    its ``m`` samples are distinct. With ``batch_size=None`` one iteration covers every
    class once (``m * num_classes`` indices).

    The length is ``length_before_new_iter`` rounded down to a multiple of ``batch_size``
    (or of ``m * num_classes`` when ``batch_size`` is None and that is smaller), as in PML.

    Randomness comes from ``metricssl.utils.common_functions.NUMPY_RANDOM`` (numpy's global
    generator by default), so ``np.random.seed`` makes it reproducible. The draws follow the
    same distribution as PML's but not the same sequence: each iteration's classes and
    every class's samples are drawn for the whole epoch at once, vectorised, instead of one
    ``numpy.random.choice`` per class and batch (which permutes the whole class every time).

    Deviations from PML: bad arguments raise ``ValueError``/``TypeError`` instead of an
    ``AssertionError``; and when ``batch_size`` is None and ``length_before_new_iter <
    m * num_classes``, PML yields a whole pass (more indices than its own ``len``), whereas
    this sampler yields exactly ``len(sampler)`` indices.

    Args:
        labels: one label per dataset item (tensor, array or sequence).
        m: samples per class in each batch.
        batch_size: the DataLoader's batch size, a multiple of ``m`` and at most
            ``m * num_classes``; None for "all classes each iteration".
        length_before_new_iter: indices per epoch (before rounding).

    Example:
        >>> import torch
        >>> from metricssl.samplers import MPerClassSampler
        >>> labels = torch.arange(100) % 10
        >>> sampler = MPerClassSampler(labels, m=4, batch_size=32, length_before_new_iter=320)
        >>> loader = torch.utils.data.DataLoader(range(100), batch_size=32, sampler=sampler)
        >>> len(sampler)
        320
    """

    def __init__(
        self, labels, m: int, batch_size: int | None = None, length_before_new_iter: int = 100000
    ):
        labels = _labels_to_numpy(labels)
        # PML casts with int(); accept numpy integers and integral floats from config files.
        m = _as_int("m", m)
        batch_size = None if batch_size is None else _as_int("batch_size", batch_size)
        length_before_new_iter = _as_int("length_before_new_iter", length_before_new_iter)
        check_number("m", m, low=1, integer=True)
        check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
        check_number("length_before_new_iter", length_before_new_iter, low=1, integer=True)

        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        self.m_per_class = m
        self.batch_size = batch_size
        self.labels = classes.tolist()
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.labels_to_indices = {
            c: order[s : s + n] for c, s, n in zip(self.labels, starts, counts)
        }
        self._order = order
        self._starts = starts
        self._counts = counts
        self.length_of_single_pass = m * len(classes)
        self.list_size = length_before_new_iter
        if batch_size is None:
            if self.length_of_single_pass < self.list_size:
                self.list_size -= self.list_size % self.length_of_single_pass
        else:
            if self.list_size < batch_size:
                raise ValueError(
                    f"length_before_new_iter ({self.list_size}) must be >= batch_size "
                    f"({batch_size})"
                )
            if self.length_of_single_pass < batch_size:
                raise ValueError(
                    f"m * (number of classes) = {m} * {len(classes)} = "
                    f"{self.length_of_single_pass} must be >= batch_size ({batch_size}): "
                    f"there are not enough classes to fill a batch with {m} per class"
                )
            if batch_size % m:
                raise ValueError(f"batch_size ({batch_size}) must be a multiple of m ({m})")
            self.list_size -= self.list_size % batch_size

    def __len__(self) -> int:
        return self.list_size

    def calculate_num_iters(self) -> int:
        """Iterations (batches, or passes over all classes) drawn per epoch (PML's rule)."""
        divisor = self.length_of_single_pass if self.batch_size is None else self.batch_size
        return self.list_size // divisor if divisor < self.list_size else 1

    def __iter__(self):
        rng = c_f.NUMPY_RANDOM
        num_classes = len(self._counts)
        per_iter = num_classes if self.batch_size is None else self.batch_size // self.m_per_class
        classes = _random_orderings(rng, self.calculate_num_iters(), num_classes, per_iter)
        slots = classes.reshape(-1)
        sizes = self._counts[slots]
        m = self.m_per_class
        within = np.empty((len(slots), m), dtype=np.int64)
        big = sizes >= m
        if big.any():
            within[big] = _random_subsets(rng, sizes[big], m)
        if not big.all():
            small = ~big
            # Too few samples for m distinct ones: draw with replacement, as PML does.
            draws = _uniform(rng, (int(small.sum()), m)) * sizes[small, None]
            within[small] = np.minimum(draws.astype(np.int64), sizes[small, None] - 1)
        indices = self._order[self._starts[slots, None] + within].reshape(-1)
        return iter(indices[: self.list_size].tolist())


def _as_int(name: str, value):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"{name} must be an int, got {value!r}")
