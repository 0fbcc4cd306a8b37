"""MPerClassSampler: batches made of m samples from each of several classes (PML's sampler)."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from torch.utils.data import Sampler

from ..core import common as c_f
from ..core.validation import ArgumentError, check_bool, check_number


def _uniform(rng, size) -> np.ndarray:
    """Uniform [0, 1) draws from numpy's legacy module/RandomState or a new-style Generator."""
    draw = getattr(rng, "random_sample", None) or rng.random
    return draw(size)


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
    generator by default), drawn exactly as PML draws it: per iteration one shuffle of the
    class list (kept between iterations and epochs), then one ``choice`` per class. For the
    same seed the index sequence is PML's, index for index.

    Deviations from PML: when ``batch_size`` is None and ``length_before_new_iter <
    m * num_classes``, PML yields a whole pass (more indices than its own ``len``), whereas
    this sampler yields the first ``len(sampler)`` of them. Bad arguments raise an
    ``ArgumentError`` (a ``ValueError`` that is also the ``AssertionError`` PML raises), or
    a ``TypeError`` for a non-integral ``m``/``batch_size`` that PML would silently truncate.

    ``cover_all=True`` (not in PML) makes every sample appear at least once per epoch,
    with the same batch layout (distinct classes, ``m`` contiguous samples each). A class
    of ``n`` samples needs ``ceil(n / m)`` runs of ``m`` to show them all; the epoch is
    lengthened, if needed, until every class gets that many runs (a class never appears
    twice in a batch), so ``len`` is the larger of the usual length and that minimum.
    Runs beyond the minimum are spread as evenly as possible over the classes, the
    remainder to random classes. Each class walks through a random permutation of its
    samples, without replacement, starting a new permutation when it is used up; the last
    run of a permutation is topped up with other samples from that permutation's start.
    Only classes with fewer than ``m`` samples repeat a sample inside a run (they cycle
    through their samples).

    Args:
        labels: one label per dataset item (tensor, array or sequence).
        m: samples per class in each batch.
        batch_size: the DataLoader's batch size, a multiple of ``m`` and at most
            ``m * num_classes``; None for "all classes each iteration".
        length_before_new_iter: indices per epoch (before rounding).
        cover_all: visit every sample at least once per epoch (see above).

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
        self,
        labels,
        m: int,
        batch_size: int | None = None,
        length_before_new_iter: int = 100000,
        cover_all: bool = False,
    ):
        check_bool("cover_all", cover_all)
        labels = _labels_to_numpy(labels)
        # PML casts with int(); accept numpy integers and integral floats from config files.
        m = _as_int("m", m)
        batch_size = None if batch_size is None else _as_int("batch_size", batch_size)
        length_before_new_iter = _as_int("length_before_new_iter", length_before_new_iter)
        check_number("m", m, low=1, integer=True)
        check_number("batch_size", batch_size, low=1, integer=True, allow_none=True)
        check_number("length_before_new_iter", length_before_new_iter, low=1, integer=True)

        classes, first, inverse, counts = np.unique(
            labels, return_index=True, return_inverse=True, return_counts=True
        )
        self.m_per_class = m
        self.batch_size = batch_size
        order = np.argsort(inverse, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        # PML's class list is in order of first appearance; its shuffles start from it.
        by_appearance = np.argsort(first, kind="stable")
        self.labels_to_indices = {
            classes[c]: order[starts[c] : starts[c] + counts[c]] for c in by_appearance
        }
        self.labels = list(self.labels_to_indices)
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
                raise ArgumentError(
                    f"length_before_new_iter ({self.list_size}) must be >= batch_size "
                    f"({batch_size})"
                )
            if self.length_of_single_pass < batch_size:
                raise ArgumentError(
                    f"m * (number of classes) = {m} * {len(classes)} = "
                    f"{self.length_of_single_pass} must be >= batch_size ({batch_size}): "
                    f"there are not enough classes to fill a batch with {m} per class"
                )
            if batch_size % m:
                raise ArgumentError(f"batch_size ({batch_size}) must be a multiple of m ({m})")
            self.list_size -= self.list_size % batch_size
        self.cover_all = bool(cover_all)
        if self.cover_all:
            self._extend_to_cover_all()

    def _classes_per_iter(self) -> int:
        num_classes = len(self._counts)
        return num_classes if self.batch_size is None else self.batch_size // self.m_per_class

    def _extend_to_cover_all(self):
        """Lengthen the epoch until every class can show each of its samples once."""
        self._runs_to_cover = -(-self._counts // self.m_per_class)  # ceil(n_c / m)
        per_iter = self._classes_per_iter()
        # Enough class slots in total, and a class appears at most once per iteration.
        iters = max(-(-int(self._runs_to_cover.sum()) // per_iter), int(self._runs_to_cover.max()))
        iter_len = self.m_per_class * per_iter
        self.list_size = max(iters, self.list_size // iter_len) * iter_len

    def __len__(self) -> int:
        return self.list_size

    def calculate_num_iters(self) -> int:
        """Iterations (batches, or passes over all classes) drawn per epoch (PML's rule)."""
        divisor = self.length_of_single_pass if self.batch_size is None else self.batch_size
        return self.list_size // divisor if divisor < self.list_size else 1

    def __iter__(self):
        if self.cover_all:
            return iter(self._cover_all_indices(c_f.NUMPY_RANDOM).tolist())
        # PML's draws, one by one: the same calls on the same generator give the same
        # sequence (a vectorised draw cannot reproduce choice()'s per-call permutation).
        per_iter = self._classes_per_iter()
        idx_list = []
        for _ in range(self.calculate_num_iters()):
            c_f.NUMPY_RANDOM.shuffle(self.labels)
            for label in self.labels[:per_iter]:
                chosen = c_f.safe_random_choice(self.labels_to_indices[label], self.m_per_class)
                idx_list.extend(chosen.tolist())
        return iter(idx_list[: self.list_size])

    def _cover_all_indices(self, rng) -> np.ndarray:
        m, counts = self.m_per_class, self._counts
        num_classes, per_iter = len(counts), self._classes_per_iter()
        iters = self.calculate_num_iters()
        need = self._runs_to_cover
        runs = _runs_per_class(rng, need, iters, per_iter)
        slots = _layout(rng, runs, iters, per_iter).reshape(-1)

        # Rank of each run among its class's runs, in epoch order.
        by_class = np.argsort(slots, kind="stable")
        first_run = np.cumsum(runs) - runs
        rank = np.empty_like(slots)
        rank[by_class] = np.arange(len(slots)) - first_run[slots[by_class]]

        # Each class walks through fresh random permutations ("cycles") of its samples; a
        # cycle spans need[c] runs and wraps around to its start to fill its last run.
        cycles = -(-runs // need)
        cycle_class = np.repeat(np.arange(num_classes), cycles)
        sizes = counts[cycle_class]
        cycle_start = np.cumsum(sizes) - sizes
        item_cycle = np.repeat(np.arange(len(cycle_class)), sizes)
        local = np.arange(len(item_cycle)) - cycle_start[item_cycle]
        perms = local[np.lexsort((_uniform(rng, len(local)), item_cycle))]

        run_cycle = (np.cumsum(cycles) - cycles)[slots] + rank // need[slots]
        offset = (rank % need[slots]) * m
        pos = (offset[:, None] + np.arange(m)) % counts[slots, None]
        within = perms[cycle_start[run_cycle, None] + pos]
        # The wrap-around samples sit at the end of a run: shuffle every run.
        within = np.take_along_axis(within, np.argsort(_uniform(rng, within.shape), axis=1), 1)
        return self._order[self._starts[slots, None] + within].reshape(-1)


def _runs_per_class(rng, need: np.ndarray, iters: int, per_iter: int) -> np.ndarray:
    """Runs per class in an epoch: at least ``need``, at most ``iters``, ``iters * per_iter``
    in total, otherwise as equal as possible (water-filling), ties broken at random."""
    total = iters * per_iter

    def filled(level):
        return int(np.clip(level, need, iters).sum())

    lo, hi = 0, iters  # filled(0) = sum(need) <= total <= filled(iters)
    while lo < hi:  # the highest level whose fill still fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if filled(mid) <= total else (lo, mid - 1)
    runs = np.clip(lo, need, iters)
    extra = total - int(runs.sum())
    if extra:
        # Classes at the level can take one more run each; there are more of them than extra.
        at_level = np.flatnonzero(need <= lo)
        runs[at_level[np.argsort(_uniform(rng, len(at_level)))[:extra]]] += 1
    return runs


def _layout(rng, runs: np.ndarray, iters: int, per_iter: int) -> np.ndarray:
    """(iters, per_iter) class ids, class c appearing runs[c] <= iters times, at most once per
    iteration: classes in random order, their runs dealt column by column across the rows."""
    order = np.argsort(_uniform(rng, len(runs)))
    dealt = np.repeat(order, runs[order]).reshape(per_iter, iters).T
    dealt = dealt[np.argsort(_uniform(rng, iters))]
    return np.take_along_axis(dealt, np.argsort(_uniform(rng, dealt.shape), axis=1), axis=1)


def _as_int(name: str, value):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"{name} must be an int, got {value!r}")
